#!/usr/bin/env python3
"""Sends the interop probe requests to a running vLLM (scripts/vllm/serve.sh start) and prints
each status and raw body, for writing and checking the Rust client against the real server.

    python scripts/vllm/probe.py http://127.0.0.1:PORT [MODEL]

Standard library plus Pillow (for the test JPEGs); traffic goes only to the URL given, which
must be on loopback.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def jpeg_data_url(w: int, h: int, seed: int) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (40 + seed * 30 % 200, 120, 200))
    d = ImageDraw.Draw(img)
    for i in range(0, w, 16):
        d.line([(i, 0), (w - i, h)], fill=(255, (i * 7 + seed) % 256, 0), width=3)
    d.ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], outline=(0, 0, 0), width=4)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def post(base: str, path: str, body, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode(), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - t0


def show(title: str, status: int, body: str, secs: float) -> None:
    print(f"### {title}: HTTP {status} ({secs:.2f} s)")
    try:
        print(json.dumps(json.loads(body), indent=1))
    except ValueError:
        print(body)
    print()


def main() -> int:
    base = sys.argv[1].rstrip("/")
    host = urllib.parse.urlparse(base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("probe.py: only loopback URLs")
    model = sys.argv[2] if len(sys.argv) > 2 else "tiny-qwen2vl"

    with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
        show("GET /v1/models", r.status, r.read().decode(), 0.0)

    img1 = jpeg_data_url(320, 240, 1)
    img2 = jpeg_data_url(200, 300, 2)
    text = {"type": "text", "text": "Where was this photo taken? Give latitude and longitude."}

    def chat(parts, **kw):
        body = {"model": model, "messages": [{"role": "user", "content": parts}]}
        body.update(kw)
        return body

    sample = dict(n=3, temperature=1.0, seed=1234, max_tokens=32)
    one = chat([text, {"type": "image_url", "image_url": {"url": img1}}], **sample)
    s1, b1, t1 = post(base, "/v1/chat/completions", one)
    show("chat, 1 image, n=3 seed=1234", s1, b1, t1)
    s2, b2, t2 = post(base, "/v1/chat/completions", one)
    show("same request again", s2, b2, t2)
    if s1 == s2 == 200:
        c1 = [c["message"]["content"] for c in json.loads(b1)["choices"]]
        c2 = [c["message"]["content"] for c in json.loads(b2)["choices"]]
        print(f"### same seed -> identical choices: {c1 == c2}; choices distinct among "
              f"themselves: {len(set(c1))} of {len(c1)}\n")
    s3, b3, t3 = post(base, "/v1/chat/completions", dict(one, seed=4321))
    if s3 == 200 and s1 == 200:
        c3 = [c["message"]["content"] for c in json.loads(b3)["choices"]]
        print(f"### seed 4321 differs from seed 1234: {c3 != c1}\n")

    two = chat(
        [text, {"type": "image_url", "image_url": {"url": img1}},
         {"type": "image_url", "image_url": {"url": img2}}],
        **sample,
    )
    show("chat, 2 images (limit 1)", *post(base, "/v1/chat/completions", two))
    show("unknown model", *post(base, "/v1/chat/completions", dict(one, model="no-such-model")))
    show("malformed JSON", *post(base, "/v1/chat/completions", None, raw=b'{"model": "x", "messages": ['))
    show("missing messages", *post(base, "/v1/chat/completions", {"model": model}))
    bad_img = chat([text, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}])
    show("undecodable image", *post(base, "/v1/chat/completions", bad_img))
    show("max_tokens > context", *post(base, "/v1/chat/completions", dict(one, n=1, max_tokens=5000)))
    show("prompt + max_tokens > context", *post(base, "/v1/chat/completions", dict(one, n=1, max_tokens=1000)))

    schema = {
        "type": "object",
        "properties": {"latitude": {"type": "number"}, "longitude": {"type": "number"}},
        "required": ["latitude", "longitude"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "coord", "schema": schema}}
    s, b, t = post(base, "/v1/chat/completions", dict(one, max_tokens=64, response_format=rf))
    show("response_format json_schema, n=3, max_tokens=64", s, b, t)
    if s == 200:
        for c in json.loads(b)["choices"]:
            try:
                v = json.loads(c["message"]["content"])
                ok = isinstance(v, dict) and set(v) == {"latitude", "longitude"}
            except ValueError:
                ok = False
            print(f"  finish_reason={c['finish_reason']} parses-to-schema={ok}")
        print()
    s, b, t = post(base, "/v1/chat/completions", dict(one, n=1, max_tokens=256, response_format=rf))
    show("response_format json_schema, n=1, max_tokens=256", s, b, t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
