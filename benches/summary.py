#!/usr/bin/env python3
"""The benchmarks' summary table: each bench script records its headline figure, which
rewrites the table in benches/README.md from all of them.

  summary.py record --stage STAGE --what WHAT --georag VALUE --reference VALUE --unit UNIT
                    --reference-name NAME [--higher-is-better | --lower-is-better] [--size SIZE]
      Store (replace) STAGE's row in benches/results.json, with this machine's CPU model, core
      count and the UTC date. VALUE are numbers in UNIT; the ratio is computed here, oriented so
      that > 1 means georag is faster / better.
      Then rewrite benches/README.md's table (as `render` does), so that a bench script run on
      its own never leaves the table behind results.json.
  summary.py render [README]
      Rewrite the table between the `bench-summary` markers of README (default
      benches/README.md) from benches/results.json, in stage order.

Only the standard library: it runs under any python3.
"""
import argparse
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.json")
BEGIN = "<!-- bench-summary:begin (rewritten by benches/summary.py from benches/results.json after every bench script) -->"
END = "<!-- bench-summary:end -->"
ORDER = ["prepare", "decode-limit", "embed", "index-build", "index-search", "index-search-same-index", "index-build-avx512", "index-search-avx512", "index-search-same-index-avx512", "generate", "eval", "align"]


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    simd = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    except OSError:
        pass
    # The SIMD level matters: the faiss-cpu wheel dispatches to AVX-512 where the CPU has it,
    # georag's static FAISS is built for AVX2 (.cargo/config.toml).
    return f"{os.cpu_count()} cores, {model}" + (f", {simd}" if simd else "")


def load():
    if not os.path.exists(RESULTS):
        return {}
    with open(RESULTS) as f:
        return json.load(f)


def save(rows):
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, RESULTS)


def record(a):
    if a.georag <= 0 or a.reference <= 0:
        sys.exit(f"summary.py: {a.stage}: figures must be positive (georag {a.georag}, reference {a.reference})")
    ratio = a.georag / a.reference if a.higher_is_better else a.reference / a.georag
    rows = load()
    rows[a.stage] = {
        "what": a.what,
        "size": a.size,
        "unit": a.unit,
        "georag": a.georag,
        "reference": a.reference,
        "reference_name": a.reference_name,
        "higher_is_better": a.higher_is_better,
        "ratio": ratio,
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "command": a.command,
    }
    save(rows)
    print(f"[bench-summary] {a.stage}: georag {a.georag:g} {a.unit}, {a.reference_name} {a.reference:g} {a.unit}, ratio {ratio:.2f}")


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def render(a):
    rows = load()
    lines = [
        BEGIN,
        "",
        "| stage | what | size | georag | reference | ratio | machine | date | command |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for stage in sorted(rows, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s)):
        r = rows[stage]
        lines.append(
            f"| {stage} | {r['what']} | {r['size']} | {fmt(r['georag'])} {r['unit']} | "
            f"{fmt(r['reference'])} {r['unit']} ({r['reference_name']}) | **{r['ratio']:.2f}×** | "
            f"{r['machine']} | {r['date']} | `{r['command']}` |"
        )
    lines += [
        "",
        "Ratio > 1 means georag is faster than the reference (for times: reference / georag; for "
        "rates: georag / reference); against a physical limit (the decode limit, the simulator's "
        "capacity) it is the share of that limit georag reaches, at most 1. Each row is the latest run of its script on the machine named "
        "in it; a row is replaced only when its script runs again, so rows of different dates can "
        "stand side by side. The sections below give each benchmark's method and full figures.",
        "",
        END,
    ]
    path = a.readme
    with open(path) as f:
        text = f.read()
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + block + post
    else:
        head, sep, body = text.partition("\n")
        text = head + "\n\n## Summary\n\n" + block + "\n" + sep + body
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"[bench-summary] {len(rows)} rows written to {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--stage", required=True)
    r.add_argument("--what", required=True)
    r.add_argument("--size", default="")
    r.add_argument("--unit", required=True)
    r.add_argument("--georag", type=float, required=True)
    r.add_argument("--reference", type=float, required=True)
    r.add_argument("--reference-name", required=True)
    r.add_argument("--command", required=True)
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--higher-is-better", dest="higher_is_better", action="store_true")
    g.add_argument("--lower-is-better", dest="higher_is_better", action="store_false")
    w = sub.add_parser("render")
    w.add_argument("readme", nargs="?", default=os.path.join(HERE, "README.md"))
    a = p.parse_args()
    if a.cmd == "record":
        record(a)
        a.readme = os.path.join(HERE, "README.md")
    render(a)


if __name__ == "__main__":
    main()
