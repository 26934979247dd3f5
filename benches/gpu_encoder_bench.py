#!/usr/bin/env python3
"""transformers side of the GPU embedding benchmark in scripts/device-check.sh.

    gpu_encoder_bench.py make clip DIR      # random-weight CLIP ViT-B/16 @ 224 (hf_encoder_bench.py's)
    gpu_encoder_bench.py make siglip DIR    # random-weight SigLIP so400m/14 @ 384 (seeded)
    gpu_encoder_bench.py run DIR IMAGE_DIR BATCH [DEVICE] [DTYPE]   # default cuda, bf16

`run` does what `georag embed` does for the same snapshot and photos, the way a researcher would
with transformers: PIL decode, the snapshot's image processor (PIL path), get_image_features in
DTYPE on DEVICE, L2-normalise, in batches of BATCH, one process. It prints the images/s end to
end, the decode + preprocess and model seconds, the model-only images/s (the model's seconds
measured with the device synchronised after each batch, the first batch excluded as warm-up) and
torch's peak allocated / reserved GPU memory.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def make(kind, d):
    if kind == "clip":
        from hf_encoder_bench import make as make_clip

        return make_clip(d)
    from transformers import SiglipConfig, SiglipModel

    try:
        from transformers import SiglipImageProcessorPil as Proc
    except ImportError:
        from transformers import SiglipImageProcessor as Proc
    torch.manual_seed(0)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh"),
    )
    SiglipModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    Proc(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(d)


def run(d, images, batch, device, dtype):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype]
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = AutoModel.from_pretrained(d, dtype=dt).to(dev).eval()
    proc = AutoImageProcessor.from_pretrained(d, use_fast=False)
    files = sorted(os.path.join(images, f) for f in os.listdir(images) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t_prep = t_model = t_model_warm = 0.0
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
                t_model_warm += dt_model
                n_warm += len(ims)
    total = time.perf_counter() - t0
    mem = ""
    if dev.type == "cuda":
        mem = (f"; torch peak allocated {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB, "
               f"reserved {torch.cuda.max_memory_reserved(dev) / 2**20:.0f} MiB")
    only = f"{n_warm / t_model_warm:.1f} images/s" if n_warm else "n/a (one batch)"
    print(f"{len(files)} images in {total:.2f} s = {len(files) / total:.1f} images/s end to end; "
          f"decode+preprocess {t_prep:.2f} s, model {t_model:.2f} s (sequential); model only {only}{mem}; "
          f"torch {torch.__version__}, {dtype} on {dev}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        a = sys.argv[2:]
        run(a[0], a[1], int(a[2]), a[3] if len(a) > 3 else "cuda", a[4] if len(a) > 4 else "bf16")
