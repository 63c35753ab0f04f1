"""Views benchmark: time to build the interactive page for 10k documents, its size, and t-STE on 100k votes.

    .venv/bin/python bench/views.py [--docs 10000] [--votes 100000] [--sample 3000] [--projection umap]

Page case: a SQLite store with ``--docs`` documents (synthetic texts from 12 topic
vocabularies, so BM25 has structure) and two criteria; the embedding cache is filled
beforehand (plain and both criteria's prompted vectors, a 384-d mixture around the topic
centres), as after a ``propose`` run: the timed part is ``condsim-annot views`` itself
(sample, BM25 kernel, projections, clusters, SOMs, silhouettes, agreement, HTML).  Peer:
scikit-learn's t-SNE on the same 50-d PCA input as our default projection, one map.

t-STE case: ``--votes`` triplets over ``--docs`` documents answered from a planted 2-D
layout with 10% random answers, both fits started from a noisy copy of the layout (as `views`
starts from the embedding map); ours (numpy, full-batch Adam, 400 iterations) vs the same
objective and optimiser in PyTorch autograd (the peer: what one would write with a
framework).  Reported: wall and CPU time (on a shared machine the wall time mostly measures
the other processes), held-out triplet accuracy against the true layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(folder: Path, n: int, seed: int = 0):
    from condsim_annot.criteria import add_criterion, default_instruction, get_criterion
    from condsim_annot.db import open_store
    from condsim_annot.ingest import content_hash, ingest
    from condsim_annot.propose.cache import EmbeddingCache, model_key, query_key
    from condsim_annot.propose.embedding import default_model_path

    rng = np.random.default_rng(seed)
    vocab = [[f"w{t}x{j}" for j in range(40)] for t in range(12)]
    common = [f"c{j}" for j in range(200)]
    topic = rng.integers(0, 12, n)
    rows = []
    for i in range(n):
        words = list(rng.choice(vocab[topic[i]], 12)) + list(rng.choice(common, 18))
        rows.append({"id": f"doc{i}", "text": " ".join(rng.permutation(words)), "category": f"t{topic[i] % 6}"})
    f = folder / "docs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = open_store(f"sqlite:///{folder / 'bench.db'}")
    ingest(store, [str(f)])
    for name in ("crit-a", "crit-b"):
        add_criterion(store, name, f"similar under {name}")
    model = default_model_path()
    folder_emb = folder / ".condsim" / "emb"
    centres = rng.normal(size=(12, 384))
    hashes = [content_hash(r["text"]) for r in rows]

    def vecs(shift: float) -> np.ndarray:
        V = centres[topic] + shift * rng.normal(size=(n, 384)) + rng.normal(0, 1.2, (n, 384))
        return (V / np.linalg.norm(V, axis=1, keepdims=True)).astype(np.float32)

    EmbeddingCache(folder_emb, model_key(model), model=model).append(hashes, vecs(0.0))
    q = EmbeddingCache(folder_emb, model_key(model) + ".query", model=model)
    with store.session() as s:
        for name, shift in (("crit-a", 0.3), ("crit-b", 0.8)):
            prompt = default_instruction(get_criterion(s, name))
            q.append([query_key(prompt, h) for h in hashes], vecs(shift))
    return store


def bench_page(n: int, sample: int, projection: str) -> dict:
    from condsim_annot.views.build import ViewOptions, build_views
    from condsim_annot.views.page import write_page
    from condsim_annot.views.projection import pca

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        store = make_store(folder, n)
        setup = time.perf_counter() - t0
        os.environ.pop("CONDSIM_CACHE", None)
        opts = ViewOptions(sample=sample, color_by="category", **({"projection": projection} if projection else {}))
        t0, c0 = time.perf_counter(), time.process_time()
        data = build_views(store, ["crit-a", "crit-b"], opts)
        write_page(data, str(folder / "v.html"), str(folder / "v.json"))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = (folder / "v.html").stat().st_size
        t0, c0 = time.perf_counter(), time.process_time()
        data2 = build_views(store, ["crit-a", "crit-b"], opts)  # a second run: imports done, BM25 index cached
        write_page(data2, str(folder / "v2.html"))
        wall2, cpu2 = time.perf_counter() - t0, time.process_time() - c0
        from sklearn.manifold import TSNE

        from condsim_annot.propose.cache import EmbeddingCache  # noqa: F401  (cache already filled)
        from condsim_annot.views import spaces as sp

        docs = sp.sample_documents(store, sp.load_criteria(store, ["crit-a"])[0], sample, 0)
        E = sp.embeddings(store, docs, prompt=None)
        t0 = time.perf_counter()
        TSNE(n_components=2, init="pca", random_state=0).fit_transform(pca(E, 50))
        tsne = time.perf_counter() - t0
    sil = {(r["criterion"], r["space"]): r["silhouette_space"] for r in data["silhouettes"]}
    return {
        "setup_s": setup,
        "wall_s": wall,
        "cpu_s": cpu,
        "second_run_s": wall2, "second_run_cpu": cpu2,
        "html_bytes": size,
        "projection": data["projection"],
        "sample": data["sample"]["described"],
        "tsne_one_map_s": tsne,
        "silhouette": sil,
    }


def planted_votes(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-1, 1, (n, 2))
    T = rng.integers(0, n, (int(m * 1.1), 3))
    T = T[(T[:, 0] != T[:, 1]) & (T[:, 0] != T[:, 2]) & (T[:, 1] != T[:, 2])][:m]
    d1 = ((truth[T[:, 0]] - truth[T[:, 1]]) ** 2).sum(1)
    d2 = ((truth[T[:, 0]] - truth[T[:, 2]]) ** 2).sum(1)
    flip = (d1 > d2) ^ (rng.random(len(T)) < 0.1)
    T[flip] = T[flip][:, [0, 2, 1]]
    return T, truth


def torch_tste(T: np.ndarray, n: int, X0: np.ndarray, n_iter: int, lr: float, lam: float) -> np.ndarray:
    """The same objective (t-STE, alpha 1, mean NLL + lam/n * |X - X0|^2) and Adam in PyTorch autograd."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    X = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    prior = torch.tensor(X0, dtype=torch.float64)
    Tt = torch.tensor(T)
    opt = torch.optim.Adam([X], lr=lr)
    for _ in range(n_iter):
        opt.zero_grad()
        qij = 1 + ((X[Tt[:, 0]] - X[Tt[:, 1]]) ** 2).sum(1)
        qil = 1 + ((X[Tt[:, 0]] - X[Tt[:, 2]]) ** 2).sum(1)
        loss = -torch.nn.functional.logsigmoid(-(torch.log(qij) - torch.log(qil))).mean()
        loss = loss + lam / n * ((X - prior) ** 2).sum()
        loss.backward()
        opt.step()
    return X.detach().numpy()


def bench_tste(n: int, m: int) -> dict:
    """Votes from a planted layout; both fits start from a noisy copy of it (the "method map", as in `views`)."""
    from condsim_annot.views.tste import TSTE, triplet_accuracy

    T, truth = planted_votes(n, m)
    test, _ = planted_votes(n, 20000, seed=1)
    d1 = ((truth[test[:, 0]] - truth[test[:, 1]]) ** 2).sum(1)
    clean = test[d1 < ((truth[test[:, 0]] - truth[test[:, 2]]) ** 2).sum(1)]
    X0 = truth + np.random.default_rng(2).normal(0, 0.3, truth.shape)
    X0 = (X0 - X0.mean(0)) / X0.std()
    t0, c0 = time.perf_counter(), time.process_time()
    ours = TSTE(tol=0.0).fit(T, n, init=X0)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    Xt = torch_tste(T, n, X0, ours.n_iter_, ours.lr, ours.lam)
    t_torch, c_torch = time.perf_counter() - t0, time.process_time() - c0
    return {"ours_s": t_ours, "ours_cpu": c_ours, "torch_s": t_torch, "torch_cpu": c_torch, "iterations": ours.n_iter_,
            "acc_init": triplet_accuracy(X0, clean), "acc_ours": triplet_accuracy(ours.embedding_, clean),
            "acc_torch": triplet_accuracy(Xt, clean), "n_test": len(clean)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--votes", type=int, default=100000)
    ap.add_argument("--sample", type=int, default=3000)
    ap.add_argument("--projection", default=None, help="umap | tsne | pca (default: the command's default)")
    ap.add_argument("--only", choices=["page", "tste"], help="Run one of the two cases.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    t = bench_tste(args.docs, args.votes) if args.only != "page" else None
    if t is not None:
        _print_tste(args, t)
    p = bench_page(args.docs, args.sample, args.projection or "") if args.only != "tste" else None
    if p is not None:
        _print_page(args, p)
    if (p and p["cpu_s"] > 30) or (t and t["ours_cpu"] > 20):
        sys.exit(1)


def _print_tste(args: argparse.Namespace, t: dict) -> None:
    print(f"t-STE, {args.votes} votes on {args.docs} documents ({t['iterations']} iterations): "
          f"ours {t['ours_s']:.1f} s wall, {t['ours_cpu']:.1f} s CPU (target < 20 s); "
          f"PyTorch autograd {t['torch_s']:.1f} s wall, "
          f"{t['torch_cpu']:.1f} s CPU ({t['torch_cpu'] / t['ours_cpu']:.1f}x our CPU); held-out triplet accuracy "
          f"(n={t['n_test']}): start {t['acc_init']:.3f}, ours {t['acc_ours']:.3f}, PyTorch {t['acc_torch']:.3f}",
          flush=True)


def _print_page(args: argparse.Namespace, p: dict) -> None:
    print(
        f"page, {args.docs} documents with cached embeddings, 2 criteria, {p['sample']}, projection {p['projection']}: "
        f"{p['wall_s']:.1f} s wall, {p['cpu_s']:.1f} s CPU (target < 30 s); second run {p['second_run_s']:.1f} s wall, "
        f"{p['second_run_cpu']:.1f} s CPU; "
        f"page {p['html_bytes'] / 1e6:.2f} MB; scikit-learn t-SNE for one map of the same sample "
        f"{p['tsne_one_map_s']:.1f} s "
        f"(setup, not timed: {p['setup_s']:.0f} s)"
    )


if __name__ == "__main__":
    main()
