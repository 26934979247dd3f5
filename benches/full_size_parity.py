#!/usr/bin/env python3
"""Parity of `georag embed` with transformers at REAL model sizes, with random weights (no
checkpoint can be downloaded here): CLIP ViT-L/14-336 (StreetCLIP's shape) and SigLIP
so400m/14-384. The CI tests use tiny models; this checks the CPU transformer path at full width,
depth and sequence length (577 and 729 tokens, SigLIP's 72-wide heads). Run by hand:

    python3 benches/full_size_parity.py GEORAG_BINARY IMAGE_DIR WORK_DIR

Needs torch, transformers (Pillow < 13 for the processors' resize order), pyarrow; writes
~2.8 GB of weights into WORK_DIR. Prints, per model, the cosine between georag's and
transformers' embedding of each image, and the largest cosine between two different images
(how far apart the images are under these weights).
"""
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image


def make(kind, d):
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=8)
    if kind == "clip-l14-336":
        from transformers import CLIPConfig, CLIPModel
        try:
            from transformers import CLIPImageProcessorPil as Proc
        except ImportError:
            from transformers import CLIPImageProcessor as Proc
        cfg = CLIPConfig(projection_dim=768, text_config=text, vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=336, patch_size=14, hidden_act="quick_gelu"))
        model = CLIPModel(cfg).eval()
        proc = Proc(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, resample=3)
    else:
        from transformers import SiglipConfig, SiglipModel
        try:
            from transformers import SiglipImageProcessorPil as Proc
        except ImportError:
            from transformers import SiglipImageProcessor as Proc
        cfg = SiglipConfig(text_config=text, vision_config=dict(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=384, patch_size=14))
        model = SiglipModel(cfg).eval()
        proc = Proc(size={"height": 384, "width": 384}, resample=3)
    model.save_pretrained(d, safe_serialization=True)
    proc.save_pretrained(d)
    return model, proc


def main(binary, images, work):
    files = sorted(f for f in os.listdir(images) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    for kind in ["clip-l14-336", "siglip-so400m"]:
        d = os.path.join(work, kind)
        model, proc = make(kind, d)
        with torch.inference_mode():
            px = proc(images=[Image.open(os.path.join(images, f)).convert("RGB") for f in files],
                      return_tensors="pt")["pixel_values"]
            ref = model.get_image_features(pixel_values=px)
            ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
            ref = torch.nn.functional.normalize(ref, dim=-1).double().numpy()
        out = os.path.join(work, "out-" + kind)
        subprocess.run([binary, "embed", "--encoder", "hf:" + d, "--input", images, "--out", out,
                        "--batch-size", "8"], check=True, env=dict(os.environ, GEORAG_QUIET="1"))
        t = pq.read_table(os.path.join(out, "emb-00000.parquet")).to_pydict()
        id_col = next(c for c in t if c in ("id", "img_id", "key"))
        vec_col = next(c for c in t if "vec" in c or "emb" in c)
        got = {str(i): np.asarray(v, dtype=np.float64) for i, v in zip(t[id_col], t[vec_col])}
        cos = []
        for k, f in enumerate(files):
            g = got.get(f, got.get(os.path.splitext(f)[0]))
            cos.append(float(g @ ref[k] / np.linalg.norm(g) / np.linalg.norm(ref[k])))
        apart = ref @ ref.T
        np.fill_diagonal(apart, -1)
        print(f"{kind}: {len(files)} images, cosine with transformers min {min(cos):.6f} "
              f"mean {np.mean(cos):.6f}; largest cosine between different images {apart.max():.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:4])
