"""Ingest benchmark: docs/s and memory growth against sqlite-utils on the same JSONL file.

    .venv/bin/python bench/ingest.py [--n 100000]

The peer is the real ``sqlite-utils insert DB docs FILE.jsonl --nl`` (a dev dependency),
which streams rows into one table without validation or hashes.  Ours is
``condsim-annot ingest FILE.jsonl`` into an initialised store: every row validated,
sha256 of every text, duplicate ids refused, one transaction.  Each run is a fresh
process; its peak RSS comes from ``wait4`` (that child only).  Memory *growth* is the
peak on n documents minus the peak on n/10: flat means streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

WORDS = "prove lemma induction bound integer prime sequence polynomial root graph colour invariant parity sum".split()
BIN = os.path.dirname(sys.executable)


def make_file(path: str, n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(30, 120)))
            f.write(json.dumps({"id": f"d{i}", "text": text, "source": "synthetic", "n": i}) + "\n")


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read().decode() if p.stderr else status}")
    return dt, usage.ru_maxrss / 1024


def run(kind: str, path: str, tmp: str) -> tuple[float, float]:
    db = os.path.join(tmp, f"{kind}-{os.path.basename(path)}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    if kind == "sqlite-utils":
        return timed([os.path.join(BIN, "sqlite-utils"), "insert", db, "docs", path, "--nl"])
    subprocess.run([os.path.join(BIN, "condsim-annot"), "--db", db, "init"], check=True, capture_output=True)
    return timed([os.path.join(BIN, "condsim-annot"), "--db", db, "ingest", path])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best time is kept")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = os.path.join(tmp, "small.jsonl"), os.path.join(tmp, "big.jsonl")
        make_file(small, a.n // 10)
        make_file(big, a.n)
        print(f"file: {a.n} documents, {os.path.getsize(big) / 2**20:.0f} MiB (and a {a.n // 10}-document file)")
        rows = {}
        for kind in ("condsim-annot", "sqlite-utils"):
            s = min(run(kind, small, tmp) for _ in range(a.repeat))
            b = min(run(kind, big, tmp) for _ in range(a.repeat))
            rows[kind] = (s, b)
        print(f"{'':14} {'seconds':>8} {'docs/s':>8} {'peak MB (n/10)':>15} {'peak MB (n)':>12} {'growth':>8}")
        for kind, ((_, sm), (bt, bm)) in rows.items():
            print(f"{kind:14} {bt:8.2f} {a.n / bt:8.0f} {sm:15.0f} {bm:12.0f} {bm - sm:+7.0f}M")
        (_, (ot, om)), (_, (pt, pm)) = rows["condsim-annot"], rows["sqlite-utils"]
        og, pg = om - rows["condsim-annot"][0][1], pm - rows["sqlite-utils"][0][1]
        print(f"speed ours/sqlite-utils: {pt / ot:.2f}x; memory growth ours {og:+.0f} MB vs sqlite-utils {pg:+.0f} MB")


if __name__ == "__main__":
    main()
