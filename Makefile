# georag: the two set-up commands are `make demo` and `make test`.
# The build directory lives outside the clone so that repeated builds (and CI) reuse it.
CARGO_TARGET_DIR ?= $(HOME)/.cache/georag-target
# FAISS's SIMD level: avx2 (the default, .cargo/config.toml; any x86-64-v3 CPU) or avx512
# (`make build FAISS_SIMD=avx512`: the binary then needs AVX-512 F/CD/VL/DQ/BW; IVF-PQ fast-scan
# searches at nprobe 64 ran 1.19x faster, benches/README.md, "FAISS index"). avx512 builds in
# a directory of its own, because the cmake crate does not rebuild FAISS when its flags change.
FAISS_SIMD ?= avx2
ifeq ($(FAISS_SIMD),avx512)
override CARGO_TARGET_DIR := $(CARGO_TARGET_DIR)-avx512
export CXXFLAGS_x86_64_unknown_linux_gnu := -mavx2 -mfma -mf16c -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw -mpopcnt
ifeq ($(shell grep -qw avx512bw /proc/cpuinfo 2>/dev/null && echo yes),)
$(warning FAISS_SIMD=avx512: this CPU has no AVX-512 BW; the binary built here will not run on it)
endif
else ifneq ($(FAISS_SIMD),avx2)
$(error FAISS_SIMD is `$(FAISS_SIMD)`; expected avx2 or avx512)
endif
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release/georag
# Tests that skip (no ../shared, no geoclip wheel) append a line here; `make test` prints a
# summary by reason after `cargo test` (whose harness hides a passing test's SKIP line).
SKIP_LOG := $(CARGO_TARGET_DIR)/skips.log

.PHONY: deps build demo test test-servers check bench bench-deps bench-eval bench-generate bench-index bench-prepare bench-embed bench-align clean-results

deps:
	@scripts/install-deps.sh

build: deps
	cargo build --release --locked

## Run the demo experiment (synthetic world, IM2GPS features, FAISS IVF-PQ, two retrieval
## baselines, three RAG methods against georag's simulated LLM server on loopback).
demo: build
	BIN=$(BIN) scripts/demo.sh
	@echo
	@echo "Report:  results/demo/report.html   (tables: results/demo/table.md, plots: results/demo/plots/)"
	@echo "G3 ablation (aligned retrieval, + RAG, + verification): results/demo-g3-ablation/report.html"

## The whole test suite (unit, integration, real-data tests that skip without ../shared).
## scripts/fetch-geoclip.sh fetches the geoclip wheel once (GeoCLIP parity tests; they skip
## with a printed reason when PyPI is unreachable); scripts/faiss-venv.sh installs faiss-cpu
## into ~/.cache/georag-faiss once (the Python FAISS interop test, which skips likewise). Ends with a count of skipped tests by reason;
## the exit status is cargo test's.
test: deps
	@scripts/fetch-geoclip.sh
	@scripts/faiss-venv.sh > /dev/null
	@mkdir -p $(CARGO_TARGET_DIR) && : > $(SKIP_LOG)
	GEORAG_SKIP_LOG=$(SKIP_LOG) cargo test --release --locked; rc=$$?; scripts/skip-summary.sh $(SKIP_LOG); exit $$rc

## Interop with a real vLLM (CPU build from PyPI, a tiny random-weight Qwen2-VL built locally;
## about 6 GB of virtualenv in ~/.cache/georag-vllm the first time). CI runs it after `make test`.
test-servers: deps
	@scripts/test-servers.sh

## Gate the demo's accuracy against the committed baseline (what CI runs after `make demo`),
## then replay the demo's recorded LLM answers (no server) and require exactly the same numbers
## and the same prediction for every image (`--exact`); then replay the COMMITTED answers of
## configs/ci/demo_recorded.yaml (results/baselines/recorded/, re-recorded only on purpose by
## scripts/record-ci-baseline.sh) and require the committed numbers exactly.
check: build
	$(BIN) check results/demo/metrics.json --baseline results/baselines/demo.json --tolerance-pct 1.0
	GEORAG_QUIET=1 $(BIN) run configs/demo.yaml --replay --out results/demo-replay > /dev/null || [ $$? -eq 2 ]
	$(BIN) check results/demo-replay/metrics.json --baseline results/demo/metrics.json --exact
	rm -rf results/cache-recorded/responses && mkdir -p results/cache-recorded/responses
	cp results/baselines/recorded/responses.jsonl results/cache-recorded/responses/
	GEORAG_QUIET=1 $(BIN) run configs/ci/demo_recorded.yaml --replay --no-plots --out results/demo-recorded > /dev/null || [ $$? -eq 2 ]
	$(BIN) check results/demo-recorded/metrics.json --baseline results/baselines/recorded/metrics.json --exact

## georag eval vs a geopy scorer on 1,000,000 predictions (see benches/README.md).
bench-eval: build bench-deps
	benches/eval_vs_geopy.sh

## Client throughput against the simulator (200 ms latency, 64 slots; see benches/README.md).
bench-generate: build bench-deps
	benches/generate_throughput.sh

## georag's FAISS build/search vs Python faiss-cpu, same vectors and recipe, then every recipe's
## size at MP-16 / OSV-5M scale from measured file sizes, then the peak memory of each step of a
## sharded build at 1 M vectors (benches/README.md).
bench-index: build bench-deps
	benches/index_vs_faiss.sh

bench-deps:
	@scripts/install-deps.sh --bench

## Ingest on the real sample photos: the decode limit, `georag prepare` and a PIL + pyarrow
## script in one run (benches/README.md).
bench-prepare: build bench-deps
	benches/decode_limit.sh

## `georag embed` vs transformers on the same random-weight CLIP ViT-B/16 and real photos.
bench-embed: build bench-deps
	benches/encoders_vs_transformers.sh

## G3 alignment-head training on CPU: georag (candle) vs the same model in PyTorch.
bench-align: build bench-deps
	benches/align_vs_torch.sh

## Every stage benchmark. Each records its headline figure in benches/results.json and rewrites
## the summary table at the top of benches/README.md from it (benches/summary.py record), so a
## bench script run on its own keeps the table current too. About 30 minutes on 2 cores; each
## stage's section below it has the full figures.
# (prerequisites run in this order)
bench: bench-prepare bench-embed bench-generate bench-eval bench-index bench-align

clean-results:
	rm -rf results/demo results/demo-replay results/demo-align results/demo-g3 results/demo-g3-ablation results/demo-recorded results/cache results/cache-recorded
