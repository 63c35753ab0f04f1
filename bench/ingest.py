"""Ingest benchmark: docs/s and memory growth against sqlite-utils on the same JSONL file.

    .venv/bin/python bench/ingest.py [--n 100000] [--repeat 1]

The two sides, each a fresh process timed from start to exit (start-up and imports included):

* sqlite-utils (the real ``sqlite-utils insert DB docs FILE.jsonl --nl``, a dev dependency): creates a plain
  table (no index) from the first rows' types and inserts 100 rows per statement, committing every 100 rows
  (a failure half-way keeps the first part); rollback journal.  No validation, no hash, no duplicate check.
* ours (``condsim-annot --db DB ingest FILE.jsonl``, into a store made by ``init`` beforehand, not timed):
  every row validated (id, text, metadata; a bad row names file:line:field), sha256 of every text, duplicate ids
  refused, metadata kept as JSON, one transaction (all or nothing) in WAL mode with synchronous=NORMAL; the
  ``document`` table keeps its primary key, its unique (corpus, id) index and its two other indexes (a large
  ingest drops those two and builds them again before its commit, in the same transaction).

Both are whole commands, so each one's start-up counts; the start-up alone (``--version``) is printed too.

Peak RSS comes from ``wait4`` (that child only); memory *growth* is the peak on n documents minus the peak on
n/10 (flat means streaming; ours keeps one thing per page written: SQLite's WAL index, 8 bytes per 4 KiB page
of the one transaction, about 0.15 MB for 100k documents, where sqlite-utils commits every 100 rows).  CPU
seconds (user + system, from the same ``wait4``) are printed too: on a shared machine they move less than
wall time.  With ``--repeat``, the two sides alternate and the best run is kept.
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
KINDS = ("condsim-annot", "sqlite-utils")


def make_file(path: str, n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(30, 120)))
            f.write(json.dumps({"id": f"d{i}", "text": text, "source": "synthetic", "n": i}) + "\n")


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read().decode() if p.stderr else status}")
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run(kind: str, path: str, tmp: str) -> tuple[float, float, float]:
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
        load = os.getloadavg()
        startup = {k: min(timed([os.path.join(BIN, k), "--version"])[0] for _ in range(3)) for k in KINDS}
        runs: dict[str, list[tuple[tuple[float, float, float], tuple[float, float, float]]]] = {k: [] for k in KINDS}
        for _ in range(a.repeat):
            for kind in KINDS:
                runs[kind].append((run(kind, small, tmp), run(kind, big, tmp)))
        best = {k: (min(r[0] for r in v), min(r[1] for r in v)) for k, v in runs.items()}
        print(f"{'':14} {'seconds':>8} {'cpu s':>6} {'docs/s':>8} {'peak MB (n/10)':>15} {'peak MB (n)':>12} "
              f"{'growth':>8}")
        for kind, (sm, bg) in best.items():
            print(f"{kind:14} {bg[0]:8.2f} {bg[1]:6.2f} {a.n / bg[0]:8.0f} {sm[2]:15.1f} {bg[2]:12.1f} "
                  f"{bg[2] - sm[2]:+7.1f}M")
        (osm, obg), (psm, pbg) = best["condsim-annot"], best["sqlite-utils"]
        print(f"speed ours/sqlite-utils: {pbg[0] / obg[0]:.2f}x (cpu {pbg[1] / obg[1]:.2f}x); memory growth ours "
              f"{obg[2] - osm[2]:+.1f} MB vs sqlite-utils {pbg[2] - psm[2]:+.1f} MB; load average "
              f"{load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
        print("start-up (--version): " + ", ".join(f"{k} {t:.2f} s" for k, t in startup.items()))


if __name__ == "__main__":
    main()
