#!/usr/bin/env python3
"""transformers side of benches/encoders_vs_transformers.sh.

    hf_encoder_bench.py make MODEL_DIR            # random-weight CLIP ViT-B/16 @ 224 (seeded)
    hf_encoder_bench.py run MODEL_DIR IMAGE_DIR BATCH

`run` times PIL decode + CLIPImageProcessor (PIL path) + CLIPModel.get_image_features on CPU
with 2 torch threads, in batches, and prints images/s, the decode+preprocess / model split and
peak RSS.
"""
import os
import resource
import sys
import time

import torch


def make(d):
    from transformers import CLIPConfig, CLIPModel
    try:
        from transformers import CLIPImageProcessorPil as Proc
    except ImportError:
        from transformers import CLIPImageProcessor as Proc
    torch.manual_seed(0)
    cfg = CLIPConfig(
        projection_dim=512,
        text_config=dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=8, projection_dim=512),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu"),
    )
    CLIPModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    Proc(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3).save_pretrained(d)


def run(d, images, batch):
    from PIL import Image
    from transformers import CLIPModel
    try:
        from transformers import CLIPImageProcessorPil as Proc
    except ImportError:
        from transformers import CLIPImageProcessor as Proc
    torch.set_num_threads(2)
    model = CLIPModel.from_pretrained(d).eval()
    proc = Proc.from_pretrained(d)
    files = sorted(os.path.join(images, f) for f in os.listdir(images) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    t_prep = t_model = 0.0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            t = time.perf_counter()
            ims = [Image.open(f).convert("RGB") for f in files[i:i + batch]]
            px = proc(images=ims, return_tensors="pt")["pixel_values"]
            t_prep += time.perf_counter() - t
            t = time.perf_counter()
            out = model.get_image_features(pixel_values=px)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
            torch.nn.functional.normalize(out, dim=-1)
            t_model += time.perf_counter() - t
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"transformers: {len(files)} images in {total:.2f} s = {len(files) / total:.2f} images/s; "
          f"decode+preprocess {t_prep:.2f} s, model {t_model:.2f} s (sequential); peak RSS {rss:.0f} MB; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
