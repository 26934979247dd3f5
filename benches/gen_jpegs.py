"""Generate N real-sized (1024x768) JPEG photos with varied content and a metadata CSV.

Usage: python3 benches/gen_jpegs.py N OUT_DIR
Writes OUT_DIR/images/img_00000.jpg ... and OUT_DIR/meta.csv (IMG_ID, AUTHOR, LAT, LON).
Seeded, so every run makes the same files.
"""
import os
import random
import sys

import numpy as np
from PIL import Image


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rng = random.Random(7)
    nprng = np.random.default_rng(7)
    h, w = 768, 1024
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with open(os.path.join(out, "meta.csv"), "w") as meta:
        meta.write("IMG_ID,AUTHOR,LAT,LON\n")
        for i in range(n):
            # Smooth gradients plus texture and noise: compresses like a photo (~150-250 KB at q90).
            a, b, c = (rng.uniform(0.002, 0.02) for _ in range(3))
            img = np.stack(
                [
                    127 + 100 * np.sin(xx * a + rng.uniform(0, 6)),
                    127 + 100 * np.sin(yy * b + rng.uniform(0, 6)),
                    127 + 100 * np.sin((xx + yy) * c),
                ],
                axis=-1,
            )
            img += nprng.normal(0, 12, size=img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(out, "images", f"img_{i:05d}.jpg"), quality=90
            )
            meta.write(f"img_{i:05d}.jpg,user{i % 97},{rng.uniform(-60, 70):.6f},{rng.uniform(-180, 180):.6f}\n")


if __name__ == "__main__":
    main()
