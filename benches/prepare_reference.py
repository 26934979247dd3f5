"""The Python reference for `georag prepare`: what a researcher would otherwise write.

Reads the metadata CSV, validates coordinates (present, numeric, in range, not (0, 0)), reads
each image, checks it decodes fully with PIL (Image.open + convert("RGB"), which loads the
pixels), hashes it with sha256, and writes Parquet shards (id, lat, lon, image bytes, sha256)
of SHARD_ROWS rows with pyarrow. Rows that fail are counted. Single process, as such scripts
usually are.

Usage: python3 benches/prepare_reference.py META_CSV IMAGE_DIR OUT_DIR
"""
import csv
import hashlib
import io
import math
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SHARD_ROWS = 4096


def main() -> None:
    meta, images, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    cols = {"id": [], "lat": [], "lon": [], "image": [], "sha256": []}
    shard, bad = 0, 0

    def flush():
        nonlocal shard, cols
        if cols["id"]:
            pq.write_table(pa.table(cols), os.path.join(out, f"shard-{shard:05d}.parquet"), compression="snappy")
            shard += 1
            cols = {k: [] for k in cols}

    with open(meta, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            try:
                lat, lon = float(row["LAT"]), float(row["LON"])
            except ValueError:
                bad += 1
                continue
            if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180) or (lat == 0 and lon == 0):
                bad += 1
                continue
            try:
                with open(os.path.join(images, row["IMG_ID"]), "rb") as fh:
                    data = fh.read()
                Image.open(io.BytesIO(data)).convert("RGB")
            except Exception:
                bad += 1
                continue
            cols["id"].append(row["IMG_ID"])
            cols["lat"].append(lat)
            cols["lon"].append(lon)
            cols["image"].append(data)
            cols["sha256"].append(hashlib.sha256(data).hexdigest())
            if len(cols["id"]) == SHARD_ROWS:
                flush()
    flush()
    print(f"reference: {shard} shards, {bad} rows rejected")


if __name__ == "__main__":
    main()
