#!/usr/bin/env python3
"""transformers side of benches/encoders_vs_transformers.sh (CPU) and of the GPU embedding
benchmark in scripts/device-check.sh.

    hf_encoder_bench.py make [clip] MODEL_DIR     # random-weight CLIP ViT-B/16 @ 224 (seeded)
    hf_encoder_bench.py make siglip MODEL_DIR     # random-weight SigLIP so400m/14 @ 384 (seeded)
    hf_encoder_bench.py run MODEL_DIR IMAGE_DIR BATCH [DEVICE [DTYPE]]   # default cpu f32

`run` does what `georag embed` does for the same snapshot and photos, the way a researcher would
with transformers: PIL decode, the snapshot's image processor (PIL path), get_image_features in
DTYPE on DEVICE (on the CPU with 2 torch threads), L2-normalise, in batches of BATCH, one
process. It prints the images/s end to end, the decode + preprocess and model seconds, the
model-only images/s (the model's seconds with the device synchronised after each batch, the
first batch left out as warm-up), peak RSS, and on a GPU torch's peak allocated / reserved memory.
"""
import os
import resource
import sys
import time

import torch


def processor_class(family):
    """The PIL-path image processor (transformers 5.x names it `...Pil`; older ones have only
    the plain class, which is the PIL path there)."""
    import transformers

    return getattr(transformers, f"{family}ImageProcessorPil", None) or getattr(transformers, f"{family}ImageProcessor")


def make(kind, d):
    torch.manual_seed(0)
    tiny_text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=8)
    if kind == "clip":
        from transformers import CLIPConfig, CLIPModel

        cfg = CLIPConfig(
            projection_dim=512,
            text_config=dict(tiny_text, projection_dim=512),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu"),
        )
        CLIPModel(cfg).eval().save_pretrained(d, safe_serialization=True)
        processor_class("CLIP")(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3).save_pretrained(d)
    elif kind == "siglip":
        from transformers import SiglipConfig, SiglipModel

        cfg = SiglipConfig(
            text_config=tiny_text,
            vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                               image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh"),
        )
        SiglipModel(cfg).eval().save_pretrained(d, safe_serialization=True)
        processor_class("Siglip")(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3).save_pretrained(d)
    else:
        sys.exit(f"hf_encoder_bench.py: unknown model kind {kind!r} (clip or siglip)")


def run(d, images, batch, device, dtype):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype]
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(2)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = AutoModel.from_pretrained(d, dtype=dt).to(dev).eval()
    proc = AutoImageProcessor.from_pretrained(d, use_fast=False)
    files = sorted(os.path.join(images, f) for f in os.listdir(images) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t_prep = t_model = t_warm = 0.0
    n_warm = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b, i in enumerate(range(0, len(files), batch)):
            t = time.perf_counter()
            ims = [Image.open(f).convert("RGB") for f in files[i:i + batch]]
            px = proc(images=ims, return_tensors="pt")["pixel_values"].to(dev, dt)
            t_prep += time.perf_counter() - t
            t = time.perf_counter()
            out = model.get_image_features(pixel_values=px)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
            torch.nn.functional.normalize(out.float(), dim=-1).cpu()
            sync()
            dt_model = time.perf_counter() - t
            t_model += dt_model
            if b > 0:
                t_warm += dt_model
                n_warm += len(ims)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = ""
    if dev.type == "cuda":
        gpu = (f"; torch peak allocated {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB, "
               f"reserved {torch.cuda.max_memory_reserved(dev) / 2**20:.0f} MiB")
    only = f"{n_warm / t_warm:.1f} images/s" if n_warm else "n/a (one batch)"
    print(f"transformers: {len(files)} images in {total:.2f} s = {len(files) / total:.2f} images/s; "
          f"decode+preprocess {t_prep:.2f} s, model {t_model:.2f} s (sequential); model only {only}; "
          f"peak RSS {rss:.0f} MB{gpu}; torch {torch.__version__}, {dtype} on {dev}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "make":
        make(*(a[1:3] if len(a) > 2 else ["clip", a[1]]))
    else:
        run(a[1], a[2], int(a[3]), a[4] if len(a) > 4 else "cpu", a[5] if len(a) > 5 else "f32")
