"""CorpusIndex at scale: numpy exact vs FAISS exact (flat) vs FAISS IVF, side by side in one run.

On >= 1M clustered synthetic 384-d vectors (uniform random vectors make recall meaningless): build
time, memory the index adds (RSS), single-query latency (k=10, median), batch throughput and
IVF recall@10 against exact search. Then a recall check on real MiniLM embeddings: the committed
index of the embedded trivia sample (Data/corpus_index.*), queried with the sample's questions.
Writes what it prints to results/bench_index.json.

    python benchmarks/index_scale.py               # 1,000,000 vectors
    python benchmarks/index_scale.py --n 100000    # a quick run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cinephile.trivia.index import CorpusIndex  # noqa: E402
from cinephile.io import save_json  # noqa: E402


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 2.0) -> np.ndarray:
    """L2-normalised float32 points around ``clusters`` random centres, generated in blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim), dtype=np.float32)
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def measure(name: str, make, queries: np.ndarray, k: int, n_single: int) -> tuple[dict, np.ndarray]:
    before = rss_mb()
    t0 = time.perf_counter()
    index = make()
    build_s = time.perf_counter() - t0
    added = rss_mb() - before
    single = []
    for q in queries[:n_single]:
        t0 = time.perf_counter()
        index.search_vectors(q[None], k)
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _, ids = index.search_vectors(queries, k)
    batch_s = time.perf_counter() - t0
    row = {"backend": name, "build_s": round(build_s, 2), "memory_added_mb": round(added, 1),
           "query_ms_median": round(1000 * statistics.median(single), 3),
           "batch_queries_per_s": round(len(queries) / batch_s, 1)}
    print(row, flush=True)
    return row, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=2.0,
                        help="noise scale around the centres (unit-variance centres); larger is harder for IVF")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_index.json"))
    args = parser.parse_args()
    k, n_single = 10, 100

    t0 = time.perf_counter()
    # queries: new points around the same centres
    points = clustered(args.n + args.queries, args.dim, args.clusters, seed=0, spread=args.spread)
    emb, queries = points[:args.n], points[args.n:].copy()
    del points
    print(f"{args.n:,} x {args.dim} clustered vectors ({args.clusters} clusters, spread {args.spread}) in "
          f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores", flush=True)
    texts = [""] * args.n
    sources = [[]] * args.n

    def plain():
        return CorpusIndex(texts, sources, emb, "synthetic")

    rows = []
    row, exact = measure("numpy exact", plain, queries, k, n_single)
    rows.append({**row, "memory_added_mb": round(emb.nbytes / 2**20, 1), "recall_at_10": 1.0})  # the matrix itself
    row, ids = measure("faiss flat (exact)", lambda: plain().with_faiss("flat"), queries, k, n_single)
    rows.append({**row, "recall_at_10": recall_at(ids, exact)})
    ivf = None
    for nprobe in args.nprobe:
        if ivf is None:
            def make():
                nonlocal ivf
                ivf = plain().with_faiss("ivf", nlist=args.nlist, nprobe=nprobe)
                return ivf
        else:
            def make():
                ivf.faiss_index.nprobe = nprobe
                return ivf
        row, ids = measure(f"faiss IVF{args.nlist} nprobe={nprobe}" + ("" if nprobe == args.nprobe[0]
                                                                      else " (same index)"), make, queries, k, n_single)
        rows.append({**row, "recall_at_10": recall_at(ids, exact)})
        print(f"  recall@10 {rows[-1]['recall_at_10']:.3f}", flush=True)

    real = {}
    prefix = ROOT / "Data" / "corpus_index"
    if prefix.with_suffix(".npy").is_file():
        import pandas as pd
        from cinephile.models import load_retriever

        corpus = CorpusIndex.load(prefix)
        questions = pd.read_csv(ROOT / "Data" / "movie_trivia_qa.csv")["question"].tolist()
        q = np.asarray(load_retriever().encode(questions, normalize_embeddings=True), dtype=np.float32)
        _, exact_real = corpus.search_vectors(q, k)
        nlist = max(1, int(np.sqrt(len(corpus.texts))))
        real = {"chunks": len(corpus.texts), "queries": len(questions), "nlist": nlist}
        for nprobe in (1, 4):
            ivf_real = CorpusIndex(corpus.texts, corpus.sources, corpus.embeddings, corpus.embedder)
            _, approx = ivf_real.with_faiss("ivf", nlist=nlist, nprobe=nprobe).search_vectors(q, k)
            real[f"recall_at_10_nprobe_{nprobe}"] = recall_at(approx, exact_real)
        _, flat = CorpusIndex(corpus.texts, corpus.sources, corpus.embeddings).with_faiss("flat").search_vectors(q, k)
        real["flat_recall_at_10"] = recall_at(flat, exact_real)
        print("real MiniLM embeddings:", real, flush=True)

    numpy_row = rows[0]
    ratios = {r["backend"]: {"query_speedup_vs_numpy": round(numpy_row["query_ms_median"] / r["query_ms_median"], 2),
                             "batch_speedup_vs_numpy": round(r["batch_queries_per_s"]
                                                             / numpy_row["batch_queries_per_s"], 2)}
              for r in rows[1:]}
    print(ratios)
    save_json(args.out, {"benchmark": "index_scale", "cores": os.cpu_count(), "n_vectors": args.n, "dim": args.dim,
                         "clusters": args.clusters, "spread": args.spread, "n_queries": args.queries, "k": k,
                         "rows": rows, "ratios": ratios, "real_minilm": real})


if __name__ == "__main__":
    main()
