"""Proposal benchmark: 100k synthetic documents whose embeddings are cached; time to propose
10k triplets for a *new* criterion (target < 30 s on the 2-core box), and the time to embed
1k documents with the default model.

    .venv/bin/python bench/propose.py [--n 100000] [--budget 10000] [--json] [--skip-bm25]

What is measured:

* ``propose embedding``: a new criterion, so its ~2.5k anchors are embedded with the
  criterion prompt by the real bundled MiniLM; the 100k document vectors come from the
  memory-mapped cache (filled beforehand with clustered unit vectors keyed by the
  documents' content hashes: what a previous run would have left there); exact k-NN over
  all 100k in numpy blocks; selection; 10k triplets + their margins written to SQLite.
* ``propose embedding+bm25``: the same with BM25 (index built from scratch over 100k texts).
* ``embed 1k``: 1000 fresh synthetic documents through the default model (docs/s).
* Peers: the cost of the same run *without* the cache (100k documents to embed, estimated
  from the measured docs/s), and scikit-learn's brute-force k-NN on the same anchors versus
  our numpy blocks.

Measured 2026-11-28 on the shared 2-core box while other sessions kept the load average at
~10 (so wall times are inflated 3-5x; an idle run of the 1k embedding took 2.3 s, not 100 s):

    propose 10k, embedding only, new criterion: 314 s wall, 98 CPU s
        (anchors 2302 embedded: 211 s; exact k-NN + pools: 51 s; select 10 s; write 16 s)
    propose 10k, embedding + bm25 (index from scratch): 329 s wall, 107 CPU s
    embed 1k documents, default model: 102 s wall, 29 CPU s (idle box: 2.3 s)
    peer: without the cache ~10 550 s (x34); re-run no-op 0.14 s
    exact k-NN 2302 x 100k: numpy blocks 28 s vs scikit-learn brute 31 s
The 30 s target was not demonstrated on the loaded box; the anchors' prompt embeddings
(about budget / per-anchor of them) dominate, then the k-NN blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

TOPICS = [
    "induction", "pigeonhole", "invariant", "parity", "extremal", "telescoping", "amgm", "modular", "recursion",
    "bijection", "coloring", "generating", "probability", "geometry", "polynomial", "inequality",
]
WORDS = "prove show find integer prime sequence root graph sum bound number triangle set function value equal".split()


def synth_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, len(TOPICS), n)
    words = np.asarray(WORDS)
    texts = []
    for i in range(n):
        k = int(rng.integers(8, 25))
        body = " ".join(words[rng.integers(0, len(words), k)])
        texts.append(f"doc {i}: {body} using {TOPICS[topic[i]]} {TOPICS[(topic[i] + 1) % len(TOPICS)]}")
    return texts, topic


def build_store(db: str, n: int):
    from sqlalchemy import insert

    from condsim_annot.criteria import add_criterion
    from condsim_annot.db import open_store
    from condsim_annot.models import Corpus, Document, utcnow

    store = open_store(db)
    texts, topic = synth_texts(n)
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    with store.transaction() as s:
        c = Corpus(name="synthetic")
        s.add(c)
        s.flush()
        now = utcnow()
        for i in range(0, n, 5000):
            s.execute(insert(Document), [
                {"corpus_id": c.id, "ext_id": f"d{j}", "text": texts[j], "content_hash": hashes[j], "created_at": now}
                for j in range(i, min(n, i + 5000))
            ])
    add_criterion(store, "technique", "Solved with the same key technique", instruction="Represent the technique: ")
    add_criterion(store, "technique-bm25", "Solved with the same key technique (with BM25)", instruction="Technique: ")
    return store, texts, hashes, topic


def fill_cache(cache_dir: str, hashes: list[str], topic: np.ndarray, dim: int = 384) -> float:
    """Clustered unit vectors for every document, as a previous run would have cached them."""
    from condsim_annot.propose.cache import EmbeddingCache, model_key
    from condsim_annot.propose.embedding import default_model_path

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((len(TOPICS), dim)).astype(np.float32)
    t = time.perf_counter()
    name = default_model_path()
    cache = EmbeddingCache(os.path.join(cache_dir, "emb"), model_key(name), model=name)
    for i in range(0, len(hashes), 20000):
        sl = slice(i, i + 20000)
        v = centers[topic[sl]] + 1.5 * rng.standard_normal((len(topic[sl]), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cache.append(hashes[sl], v)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-bm25", action="store_true")
    args = ap.parse_args()

    from condsim_annot.propose.embedding import load_embedder
    from condsim_annot.propose.select import propose

    tmp = tempfile.mkdtemp(prefix="bench-propose-")
    res: dict = {"n_docs": args.n, "budget": args.budget, "cores": os.cpu_count(), "load_avg_before": os.getloadavg()[0]}
    t = time.perf_counter()
    store, texts, hashes, topic = build_store(f"sqlite:///{tmp}/bench.db", args.n)
    res["setup_store_s"] = round(time.perf_counter() - t, 2)
    res["fill_cache_s"] = round(fill_cache(os.path.join(tmp, ".condsim"), hashes, topic), 2)

    t = time.perf_counter()
    model = load_embedder()
    res["model_load_s"] = round(time.perf_counter() - t, 2)
    model.encode(["warm up"], show_progress_bar=False)

    # 1k documents through the default model
    fresh, _ = synth_texts(1000, seed=7)
    t, c = time.perf_counter(), time.process_time()
    model.encode(fresh, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    res["embed_1k_s"] = round(time.perf_counter() - t, 2)
    res["embed_1k_cpu_s"] = round(time.process_time() - c, 2)
    docs_per_s = 1000 / res["embed_1k_s"]
    res["embed_docs_per_s"] = round(docs_per_s, 1)

    # the headline: a new criterion, 10k triplets, document embeddings from the cache
    t, c = time.perf_counter(), time.process_time()
    s = propose(store, "technique", methods=["embedding"], budget=args.budget, seed=0)
    res["propose_embedding_s"] = round(time.perf_counter() - t, 2)
    res["propose_embedding_cpu_s"] = round(time.process_time() - c, 2)
    res["propose_embedding"] = {"added": s.added, "anchors": s.anchors, "candidates": s.candidates,
                                "documents_encoded": s.method_info["embedding"]["documents_encoded"],
                                "anchors_encoded": s.method_info["embedding"]["anchors_encoded"], "timings": s.timings,
                                "by_strategy": s.by_strategy}
    assert s.added == args.budget, s.message
    assert s.method_info["embedding"]["documents_encoded"] == 0
    # peer: the same run without the cache would first embed every document
    res["peer_uncached_estimate_s"] = round(res["propose_embedding_s"] + args.n / docs_per_s, 1)
    res["cache_speedup"] = round(res["peer_uncached_estimate_s"] / res["propose_embedding_s"], 1)
    # re-running: a no-op
    t = time.perf_counter()
    s2 = propose(store, "technique", methods=["embedding"], budget=args.budget, seed=0)
    res["rerun_noop_s"] = round(time.perf_counter() - t, 3)
    assert s2.added == 0

    # peer for exact k-NN: scikit-learn brute force on the same anchors vs our numpy blocks
    from condsim_annot.propose.cache import EmbeddingCache, model_key
    from condsim_annot.propose.embedding import default_model_path

    cache = EmbeddingCache(os.path.join(tmp, ".condsim", "emb"), model_key(default_model_path()))
    D = np.ascontiguousarray(cache.get(hashes))
    Q = D[: s.anchors]
    t = time.perf_counter()
    for b in range(0, len(Q), 167):
        R = Q[b : b + 167] @ D.T
        np.argpartition(-R, 9, axis=1)[:, :10]
    res["knn_numpy_blocks_s"] = round(time.perf_counter() - t, 2)
    try:
        from sklearn.neighbors import NearestNeighbors

        t = time.perf_counter()
        NearestNeighbors(n_neighbors=10, algorithm="brute", metric="cosine").fit(D).kneighbors(Q)
        res["knn_sklearn_brute_s"] = round(time.perf_counter() - t, 2)
        res["knn_ratio_sklearn_over_ours"] = round(res["knn_sklearn_brute_s"] / res["knn_numpy_blocks_s"], 2)
    except Exception as exc:  # pragma: no cover
        res["knn_sklearn_brute_s"] = f"skipped: {exc}"

    if not args.skip_bm25:
        t, c = time.perf_counter(), time.process_time()
        s3 = propose(store, "technique-bm25", methods=["embedding", "bm25"], budget=args.budget, seed=0)
        res["propose_embedding_bm25_s"] = round(time.perf_counter() - t, 2)
        res["propose_embedding_bm25_cpu_s"] = round(time.process_time() - c, 2)
        res["propose_embedding_bm25"] = {"added": s3.added, "timings": s3.timings, "by_strategy": s3.by_strategy}

    store.close()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{args.n} synthetic documents, {res['cores']} cores (load average {res['load_avg_before']:.1f} at start: "
          f"wall times on a shared box inflate, CPU seconds do not); store {res['setup_store_s']}s, cache fill {res['fill_cache_s']}s, "
          f"model load {res['model_load_s']}s")
    pe = res["propose_embedding"]
    print(f"propose {args.budget} triplets, new criterion, cached embeddings: {res['propose_embedding_s']}s "
          f"(target < 30s; {res['propose_embedding_cpu_s']} CPU s over all threads) - {pe['anchors']} anchors embedded, 0 documents; steps {pe['timings']}")
    print(f"  peer: without the cache ~{res['peer_uncached_estimate_s']}s (x{res['cache_speedup']}); re-run no-op {res['rerun_noop_s']}s")
    print(f"embed 1k documents with the default model: {res['embed_1k_s']}s ({res['embed_docs_per_s']} docs/s; "
          f"{res['embed_1k_cpu_s']} CPU s)")
    print(f"exact k-NN of {pe['anchors']} anchors over {args.n}: numpy blocks {res['knn_numpy_blocks_s']}s, "
          f"sklearn brute {res.get('knn_sklearn_brute_s')}s (ratio {res.get('knn_ratio_sklearn_over_ours')})")
    if "propose_embedding_bm25_s" in res:
        print(f"propose {args.budget} with embedding+bm25 (BM25 index built from scratch): {res['propose_embedding_bm25_s']}s "
              f"({res['propose_embedding_bm25_cpu_s']} CPU s); "
              f"steps {res['propose_embedding_bm25']['timings']}")


if __name__ == "__main__":
    sys.exit(main())
