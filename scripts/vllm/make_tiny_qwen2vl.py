#!/usr/bin/env python3
"""Builds a tiny random-weight Qwen2-VL checkpoint for the real-vLLM interop tests.

    python scripts/vllm/make_tiny_qwen2vl.py [OUT_DIR]

OUT_DIR defaults to ${GEORAG_VLLM_HOME:-~/.cache/georag-vllm}/tiny-qwen2vl. Run it with the
virtualenv that scripts/vllm/setup.sh makes (it needs torch, transformers and tokenizers).

Nothing is downloaded: the byte-level BPE tokenizer is trained here on built-in text, and the
weights are random (fixed seeds), so the output is deterministic for a given set of library
versions. The model is a real `Qwen2VLForConditionalGeneration` (~0.8 M parameters: 2 text
layers of width 128, a 2-block vision tower of width 64), with Qwen2-VL's special tokens and chat
template, and an image processor whose small `max_pixels` turns any image into at most 16
image tokens. It emits noise, which is all an API-shape test needs.

The directory is written to a temporary sibling and renamed into place, with a `.complete`
marker holding a hash of this script; a complete directory with a matching marker is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL-Instruct's chat template (string content or a list of parts; `image_url` parts count
# as images, which is how vLLM's OpenAI server hands them to the template).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The pre-tokenizer regex of Qwen2's tokenizer.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

VOCAB_SIZE = 1024  # BPE target; the model's vocab is the tokenizer's actual size
PATCH, MERGE, TEMPORAL = 14, 2, 2
MIN_PIXELS = 4 * (PATCH * MERGE) ** 2  # 56 x 56  -> at least 4 image tokens
MAX_PIXELS = 16 * (PATCH * MERGE) ** 2  # 112 x 112 -> at most 16 image tokens


def corpus() -> list[str]:
    rng = random.Random(20240601)
    base = [
        "Where was this photo taken? Answer with the latitude and longitude of the place.",
        "Look at the image and guess the location. Reply only with JSON.",
        'Answer in the form {"latitude": <number>, "longitude": <number>}.',
        "The quick brown fox jumps over the lazy dog; 0123456789 !?.,:;'\"()[]{}<>+-*/=_#@&%$",
        "Latitude is measured north or south of the equator, longitude east or west of Greenwich.",
        "A street with cars, trees, houses, mountains, a beach, a road sign and a city skyline.",
        "You are a helpful assistant. I think this is in France, near Paris, or maybe in Japan.",
        "latitude longitude Latitude Longitude LATITUDE LONGITUDE lat lon lng coordinates degrees",
        "Europe Asia Africa America Oceania country region city village north south east west",
    ]
    places = (
        "Paris London Berlin Madrid Rome Lisbon Vienna Prague Warsaw Stockholm Oslo Helsinki "
        "Moscow Istanbul Cairo Nairobi Lagos Johannesburg Cape Town Dubai Tehran Delhi Mumbai "
        "Bangkok Singapore Jakarta Manila Beijing Shanghai Seoul Tokyo Osaka Sydney Melbourne "
        "Auckland Honolulu Anchorage Vancouver Toronto Montreal New York Chicago Denver Los "
        "Angeles Mexico Bogota Lima Santiago Buenos Aires Sao Paulo Rio de Janeiro Reykjavik"
    ).split()
    words = (
        "the a an of in on at to from with near and or is are was this that it photo image "
        "picture street road building mountain river lake sea ocean forest desert snow sky sun "
        "car bus train sign shop market church temple tower bridge park field farm hill coast"
    ).split()
    lines = list(base)
    for _ in range(300):
        lines.append(" ".join(rng.choice(words + places) for _ in range(rng.randrange(5, 15))) + ".")
    for _ in range(400):
        lat = rng.uniform(-90, 90)
        lon = rng.uniform(-180, 180)
        form = rng.randrange(4)
        if form == 0:
            lines.append(json.dumps({"latitude": round(lat, 4), "longitude": round(lon, 4)}))
        elif form == 1:
            lines.append(f'{{"latitude":{lat:.6f},"longitude":{lon:.6f}}}')
        elif form == 2:
            lines.append(f"The photo was taken at latitude {lat:.3f} and longitude {lon:.3f}.")
        else:
            lines.append(f"({lat:.2f}, {lon:.2f}) - {rng.choice(base)}")
    return lines


def build_tokenizer(out: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)

    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    hf_tok.save_pretrained(out)
    return hf_tok


def build(out: Path) -> None:
    import torch
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

    random.seed(0)
    torch.manual_seed(0)

    tok = build_tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tok)

    head_dim = 32  # the smallest head size vLLM's CPU attention backend supports
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [4, 6, 6],  # sums to head_dim / 2
            },
            rms_norm_eps=1e-6,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
            dtype="bfloat16",
        ),
        vision_config=dict(
            depth=2,
            embed_dim=64,
            hidden_size=128,  # = text hidden size (the merger's output)
            mlp_ratio=4,
            num_heads=2,
            in_channels=3,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        dtype="bfloat16",  # what vLLM's CPU backend runs it in anyway
    )
    assert head_dim == config.text_config.hidden_size // config.text_config.num_attention_heads
    model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out, safe_serialization=True)

    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        patch_size=PATCH,
        merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
    )
    try:
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(
            min_pixels=MIN_PIXELS,
            max_pixels=MAX_PIXELS,
            patch_size=PATCH,
            merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
        )
    except ImportError:  # no torchvision
        video_processor = None
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)

    # Self-check: reload everything the way vLLM does and run one image prompt.
    tok2 = AutoTokenizer.from_pretrained(out)
    text = 'Where? {"latitude": 12.5, "longitude": -45.25}'
    assert tok2.decode(tok2(text)["input_ids"]) == text, "tokenizer round trip failed"
    proc = AutoProcessor.from_pretrained(out)
    from PIL import Image

    img = Image.new("RGB", (320, 240), (200, 120, 40))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt.count("<|image_pad|>") == 1, prompt
    enc = proc(text=[prompt], images=[img], return_tensors="pt")
    n_img = int((enc["input_ids"] == ids["<|image_pad|>"]).sum())
    assert 1 <= n_img <= MAX_PIXELS // (PATCH * MERGE) ** 2, n_img
    m2 = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        gen = m2.generate(**enc, max_new_tokens=4, do_sample=False)
    print(
        f"[tiny-qwen2vl] {n_params} parameters, vocab {vocab}, {n_img} image tokens for 320x240, "
        f"prompt {enc['input_ids'].shape[1]} tokens, greedy sample {gen[0, -4:].tolist()}",
        file=sys.stderr,
    )


def main() -> int:
    home = Path(os.environ.get("GEORAG_VLLM_HOME") or Path.home() / ".cache" / "georag-vllm")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else home / "tiny-qwen2vl"
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    marker = out / ".complete"
    if marker.is_file() and marker.read_text().strip() == digest:
        print(f"[tiny-qwen2vl] already built: {out}", file=sys.stderr)
        return 0
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"[tiny-qwen2vl] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
