"""The Python side of benches/index_vs_faiss.sh: the same recipe through `faiss` (faiss-cpu) on
the vectors the Rust side wrote, the same training sample rule (seeded sample of BENCH_TRAIN
rows; FAISS's own k-means seed), BENCH_REPS batch searches per nprobe (the median). Prints one JSON object.
With BENCH_SEARCH_ONLY=FILE it builds nothing and times the same searches on the index FILE (georag's),
so that both libraries are also compared on one index. Each point carries the codes scanned per query."""
import json, os, sys, time
import numpy as np
import faiss

out = os.environ.get("OUT", "/tmp/georag-index-bench")
d = int(os.environ.get("BENCH_D", "768"))
factory = os.environ.get("BENCH_FACTORY", "IVF1024,PQ64x4fs")
train = int(os.environ.get("BENCH_TRAIN", "100000"))
reps = int(os.environ.get("BENCH_REPS", "7"))
nprobes = [int(s) for s in os.environ.get("BENCH_NPROBES", "1,2,4,8,16,32,64").split(",")]
q = np.fromfile(f"{out}/q.f32", dtype="<f4").reshape(-1, d)
truth = json.load(open(f"{out}/truth.json"))


def points(ix):
    ps = faiss.ParameterSpace()
    stats = faiss.cvar.indexIVF_stats
    points = []
    for npb in nprobes:
        ps.set_index_parameter(ix, "nprobe", npb)
        ix.search(q, 10)  # warm with the whole batch, as the Rust side does
        times = []
        stats.reset()
        for _ in range(reps):
            t = time.perf_counter()
            _, I = ix.search(q, 10)
            times.append(time.perf_counter() - t)
        s = sorted(times)[len(times) // 2]
        rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), truth)]))
        points.append({"nprobe": npb, "recall_at_10": rec, "qps": len(q) / s, "reps": reps,
                       "ndis_per_query": stats.ndis / (reps * len(q))})
    return points


only = os.environ.get("BENCH_SEARCH_ONLY")
if only:
    print(json.dumps({"side": "python-faiss", "faiss": faiss.__version__, "index_file": only,
                      "points": points(faiss.read_index(only))}))
    sys.exit(0)
x = np.fromfile(f"{out}/x.f32", dtype="<f4").reshape(-1, d)
t = time.perf_counter()
ix = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
rng = np.random.default_rng(0)
sample = np.sort(rng.choice(len(x), size=min(train, len(x)), replace=False))
ix.train(x[sample])
for i in range(0, len(x), 65536):
    ix.add(x[i:i + 65536])
faiss.write_index(ix, f"{out}/py.faiss")  # georag's build time includes writing its files too
build_s = time.perf_counter() - t
nbytes = os.path.getsize(f"{out}/py.faiss")
print(json.dumps({"side": "python-faiss", "faiss": faiss.__version__, "compile_options": faiss.get_compile_options().strip(), "n": len(x), "build_s": build_s,
                  "bytes": nbytes, "bytes_per_vector": nbytes / len(x), "points": points(ix),
                  "threads": faiss.omp_get_max_threads()}))
