"""The Python side of benches/index_vs_faiss.sh: the same recipe through `faiss` (faiss-cpu) on
the vectors the Rust side wrote, the same training sample rule (seeded sample of BENCH_TRAIN
rows; FAISS's own k-means seed), BENCH_REPS batch searches per nprobe (the median). Prints one JSON object."""
import json, os, sys, time
import numpy as np
import faiss

out = os.environ.get("OUT", "/tmp/georag-index-bench")
d = int(os.environ.get("BENCH_D", "768"))
factory = os.environ.get("BENCH_FACTORY", "IVF1024,PQ64x4fs")
train = int(os.environ.get("BENCH_TRAIN", "100000"))
reps = int(os.environ.get("BENCH_REPS", "7"))
nprobes = [int(s) for s in os.environ.get("BENCH_NPROBES", "1,2,4,8,16,32,64").split(",")]
x = np.fromfile(f"{out}/x.f32", dtype="<f4").reshape(-1, d)
q = np.fromfile(f"{out}/q.f32", dtype="<f4").reshape(-1, d)
truth = json.load(open(f"{out}/truth.json"))
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
ps = faiss.ParameterSpace()
points = []
for npb in nprobes:
    ps.set_index_parameter(ix, "nprobe", npb)
    ix.search(q[:10], 10)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        _, I = ix.search(q, 10)
        times.append(time.perf_counter() - t)
    s = sorted(times)[len(times) // 2]
    rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), truth)]))
    points.append({"nprobe": npb, "recall_at_10": rec, "qps": len(q) / s, "reps": reps})
print(json.dumps({"side": "python-faiss", "faiss": faiss.__version__, "n": len(x), "build_s": build_s,
                  "bytes": nbytes, "bytes_per_vector": nbytes / len(x), "points": points,
                  "threads": faiss.omp_get_max_threads()}))
