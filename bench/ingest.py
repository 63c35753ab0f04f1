"""Ingest benchmark: docs/s and peak memory, streaming vs a load-everything peer.

    .venv/bin/python bench/ingest.py [--n 100000]

Each measurement runs in a fresh subprocess so peak RSS (ru_maxrss) is its own.
Streaming means the peak does not grow with the file: we ingest n/10 and n
documents and print both peaks; the peer (read the whole file into memory, then
insert ORM objects) shows what growing memory looks like.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

WORDS = "prove lemma induction bound integer prime sequence polynomial root graph colour invariant parity sum".split()


def make_file(path: str, n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(30, 120)))
            f.write(json.dumps({"id": f"d{i}", "text": text, "source": "synthetic", "n": i}) + "\n")


def run_ours(path: str, db: str) -> dict:
    from condsim_annot.db import open_store
    from condsim_annot.ingest import ingest

    store = open_store(db)
    t = time.perf_counter()
    res = ingest(store, [path])
    dt = time.perf_counter() - t
    return {"docs": res.added, "seconds": dt}


def run_peer(path: str, db: str) -> dict:
    """The naive way: read everything, then add ORM objects in one session."""
    import hashlib

    from condsim_annot.db import open_store
    from condsim_annot.models import Corpus, Document

    store = open_store(db)
    t = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with store.transaction() as s:
        c = Corpus(name="default")
        s.add(c)
        s.flush()
        s.add_all(
            Document(corpus_id=c.id, ext_id=r["id"], text=r["text"], meta={k: v for k, v in r.items() if k not in ("id", "text")},
                     content_hash=hashlib.sha256(r["text"].encode()).hexdigest())
            for r in rows
        )
    return {"docs": len(rows), "seconds": time.perf_counter() - t}


def child(kind: str, path: str, db: str) -> None:
    res = (run_ours if kind == "ours" else run_peer)(path, db)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def measure(kind: str, path: str, tmp: str) -> dict:
    db = os.path.join(tmp, f"{kind}-{os.path.basename(path)}.db")
    if os.path.exists(db):
        os.remove(db)
    out = subprocess.run([sys.executable, __file__, "--child", kind, path, db], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, big = os.path.join(tmp, "small.jsonl"), os.path.join(tmp, "big.jsonl")
        make_file(small, a.n // 10)
        make_file(big, a.n)
        size = os.path.getsize(big) / 2**20
        print(f"file: {a.n} documents, {size:.0f} MiB (and a {a.n // 10}-document file)")
        rows = []
        for kind in ("ours", "peer"):
            s, b = measure(kind, small, tmp), measure(kind, big, tmp)
            rows.append((kind, s, b))
        print(f"{'':6} {'docs/s':>10} {'peak MB (n/10)':>15} {'peak MB (n)':>12} {'growth':>8}")
        for kind, s, b in rows:
            print(f"{kind:6} {b['docs'] / b['seconds']:10.0f} {s['peak_rss_mb']:15.0f} {b['peak_rss_mb']:12.0f} {b['peak_rss_mb'] - s['peak_rss_mb']:+7.0f}M")
        ours, peer = rows[0][2], rows[1][2]
        print(f"speed ratio ours/peer: {(ours['docs'] / ours['seconds']) / (peer['docs'] / peer['seconds']):.2f}x; "
              f"peak memory ratio ours/peer: {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
