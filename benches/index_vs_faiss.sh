#!/usr/bin/env bash
# georag's FAISS index (build time, bytes per vector, queries/s at recall@10 >= 0.95) against the
# same recipe through Python faiss-cpu, same vectors, same machine, same run.
# Then the size of every recipe at MP-16 / OSV-5M scale (benches/index_sizes.rs), and the peak
# memory of a sharded build at 1 M vectors (benches/index_memory.rs).
# Usage: benches/index_vs_faiss.sh   (BENCH_N=1000000 BENCH_D=768 BENCH_FACTORY=... BENCH_REPS=7)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/georag-target}"
export OUT="${OUT:-$(mktemp -d /tmp/georag-index-bench.XXXX)}"
PY=$(scripts/faiss-venv.sh)
[ -n "$PY" ] || { echo "index_vs_faiss: no faiss-cpu (PyPI unreachable)" >&2; exit 1; }
cargo bench --locked --bench index_vs_faiss --no-run 2>&1 | grep -E "^(error|warning)" -A5 >&2 || true
BIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/index_vs_faiss-* | grep -v '\.d$' | head -1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
G=$(GEORAG_QUIET=1 "$BIN")
P=$("$PY" benches/index_vs_faiss.py)
# Each library also searches the other's index file: the two sides train their own k-means, so
# their inverted lists differ and at one nprobe they scan different numbers of codes; on one
# index both scan the same codes, which leaves only the libraries' code to compare.
GI=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["index_file"])' "$G")
GX=$(BENCH_SEARCH_ONLY="$OUT/py.faiss" GEORAG_QUIET=1 "$BIN")
PX=$(BENCH_SEARCH_ONLY="$GI" "$PY" benches/index_vs_faiss.py)
"$PY" - "$G" "$P" "$GX" "$PX" <<'PYEOF'
import json, sys
g, p, gx, px = (json.loads(a) for a in sys.argv[1:5])
print(f"{g['n']} x {g['d']} clustered unit vectors, recipe {g['factory']}, train {g['train']}, {g['threads']} threads (FAISS {p['faiss']} both sides; georag's compiled at {g['faiss_simd']}, the wheel loaded its {p['compile_options']} build)")
print(f"build (train+add): georag {g['build_s']:.1f} s, python faiss {p['build_s']:.1f} s, ratio {p['build_s']/g['build_s']:.2f}x")
print(f"bytes/vector: georag {g['bytes_per_vector']:.1f}, python {p['bytes_per_vector']:.1f}")
print(f"{'nprobe':>7} {'georag r@10':>11} {'georag q/s':>10} {'py r@10':>8} {'py q/s':>9} {'q/s ratio':>9}")
for a, b in zip(g["points"], p["points"]):
    print(f"{a['nprobe']:>7} {a['recall_at_10']:>11.3f} {a['qps']:>10.0f} {b['recall_at_10']:>8.3f} {b['qps']:>9.0f} {a['qps']/b['qps']:>9.2f}")
print("the same index file searched by both (codes scanned per query are FAISS's IVF statistics):")
print(f"{'index':>8} {'nprobe':>7} {'codes/query':>11} {'georag q/s':>10} {'py q/s':>9} {'q/s ratio':>9}")
for name, a_side, b_side in (("python's", gx, p), ("georag's", g, px)):
    for a, b in zip(a_side["points"], b_side["points"]):
        print(f"{name:>8} {a['nprobe']:>7} {a['ndis_per_query']:>11.0f} {a['qps']:>10.0f} {b['qps']:>9.0f} {a['qps']/b['qps']:>9.2f}")
for side, d in (("georag", g), ("python", p)):
    hit = [x for x in d["points"] if x["recall_at_10"] >= 0.95]
    print(f"{side}: first nprobe with recall@10 >= 0.95: " + (f"{hit[0]['nprobe']} at {hit[0]['qps']:.0f} q/s" if hit else "none"))
import subprocess
size = f"{g['n']:,} x {g['d']}, {g['factory']}, train {g['train']}, georag's FAISS at {g['faiss_simd']}"
# A build at another SIMD level than the default (make bench-index FAISS_SIMD=avx512) keeps rows of its own.
sfx = "" if g["faiss_simd"] == "avx2" else "-" + g["faiss_simd"]
cmd = "benches/index_vs_faiss.sh" if not sfx else f"make bench-index FAISS_SIMD={g['faiss_simd']}"
rec = [sys.executable, "benches/summary.py", "record", "--command", cmd, "--reference-name", f"Python faiss {p['faiss']}"]
subprocess.run(rec + ["--stage", "index-build" + sfx, "--what", "index build (train + add + write), same recipe and vectors", "--size", size,
                      "--unit", "s", "--georag", str(g["build_s"]), "--reference", str(p["build_s"]), "--lower-is-better"], check=True)
pairs = list(zip(g["points"], p["points"]))
hit = [(a, b) for a, b in pairs if a["recall_at_10"] >= 0.95]
# At the first nprobe where georag reaches recall@10 >= 0.95; a recipe that never does (PQ
# without refinement) is compared at its largest nprobe, and the row says so.
a, b = hit[0] if hit else max(pairs, key=lambda ab: (ab[0]["recall_at_10"], ab[0]["nprobe"]))
where = "georag's first nprobe with recall@10 >= 0.95" if hit else "the largest nprobe (recall@10 never reaches 0.95 with this recipe)"
subprocess.run(rec + ["--stage", "index-search" + sfx, "--what", f"batch search q/s at {where} (nprobe {a['nprobe']}: recall@10 {a['recall_at_10']:.3f} / {b['recall_at_10']:.3f})",
                      "--size", size + ", 1000 queries", "--unit", "q/s", "--georag", str(a["qps"]), "--reference", str(b["qps"]), "--higher-is-better"], check=True)
# The same-index ratio at the largest nprobe, on the Python side's index (the list scan dominates there).
a, b = gx["points"][-1], p["points"][-1]
subprocess.run(rec + ["--stage", "index-search-same-index" + sfx, "--what", f"batch search q/s on one index file (Python's), nprobe {a['nprobe']}: both scan {a['ndis_per_query']:.0f} codes/query",
                      "--size", size + ", 1000 queries", "--unit", "q/s", "--georag", str(a["qps"]), "--reference", str(b["qps"]), "--higher-is-better"], check=True)
for name, n in (("MP-16 (4.72 M)", 4.72e6), ("OSV-5M (5.1 M)", 5.1e6)):
    print(f"projected {name}: {n * g['bytes_per_vector'] / 1e9:.2f} GB at {g['bytes_per_vector']:.1f} bytes/vector (this recipe, {g['d']}-d)")
PYEOF
# Every recipe of issue 10 at MP-16 / OSV-5M scale, from measured file sizes (benches/index_sizes.rs).
echo
echo "index sizes per recipe (fixed + marginal bytes/vector, measured at 20k/60k/100k vectors):"
cargo bench --locked --bench index_sizes --no-run 2>&1 | grep -E "^(error|warning)" -A5 >&2 || true
SBIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/index_sizes-* | grep -v '\.d$' | head -1)
OUT="$OUT/sizes" "$SBIN" | grep '^|'
# Peak memory of a sharded build, step by step, each in its own process (benches/index_memory.rs);
# exits 1 when a step exceeds its stated bound.
echo
echo "peak memory of a sharded build (train, --worker I --workers N, --merge):"
cargo bench --locked --bench index_memory --no-run 2>&1 | grep -E "^(error|warning)" -A5 >&2 || true
MBIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/index_memory-* | grep -v '\.d$' | head -1)
OUT="$OUT/memory" GEORAG_QUIET=1 "$MBIN" | grep -v '^{'
