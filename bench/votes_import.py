"""``votes import`` benchmark: rows/s, peak memory, and what an annotator in the TUI feels meanwhile.

    .venv/bin/python bench/votes_import.py [--n 200000] [--backends sqlite,postgresql] [--no-peer]
    .venv/bin/python bench/votes_import.py --backends sqlite     # the SQLite part only (about a minute)
    .venv/bin/python bench/votes_import.py --backends sqlite --no-peer --n 50000   # a quick look

Target (issue 14): SQLite >= 20k rows/s at 200k rows, TUI p95 < 200 ms, 0 "locked".  Timings
inflate with the machine's load: the last column says the load average; compare runs made
at the same load, or the ours/peer ratio.

For each backend: a fresh store with --docs documents and one criterion, a CSV of n
votes (random triplets, 400 annotators).  The import runs in its own process (peak RSS
from ``wait4``); a second process plays the TUI: every --every seconds it commits one
vote through ``store_api.record_vote`` in a transaction (the queue's answer path) and
records how long the commit took.  Reported: rows/s, CPU s, peak MB, how long the
batch took to write and to activate, and the p50/p95/max latency of the TUI answers made while
the import ran (and any "database is locked").  Peer, same file: the real
``sqlite-utils insert DB votes FILE --csv`` (SQLite) and a raw ``COPY`` (PostgreSQL),
which load the rows into one bare table without any validation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from condsim_annot.calibrate.votes_import import import_votes
from condsim_annot.db import open_store, write_turn
from condsim_annot.ingest import ingest
from condsim_annot.models import Criterion
from condsim_annot.store_api import add_triplet, get_or_create_annotator, record_vote

PG = os.environ.get("CONDSIM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BIN = os.path.dirname(sys.executable)


def setup_store(url: str, tmp: str, n_docs: int) -> None:
    docs = os.path.join(tmp, "docs.jsonl")
    with open(docs, "w") as f:
        for i in range(n_docs):
            f.write(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n")
    store = open_store(url)
    ingest(store, [docs])
    with store.transaction() as s:
        s.add(Criterion(name="k", description="bench criterion", corpus_id=1))
    store.close()


def make_votes(path: str, n: int, n_docs: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as f:
        f.write("criterion,anchor,a,b,annotator,choice,latency_ms\n")
        for i in range(n):
            anchor, a, b = rnd.sample(range(n_docs), 3)
            f.write(f"k,d{anchor},d{a},d{b},ann{i % 400},{rnd.choice('ab')},{rnd.randint(500, 9000)}\n")


def child_import(url: str, path: str) -> None:
    marks: dict[str, float] = {}

    def progress(phase: str, done: int, total: int | None) -> None:
        marks.setdefault(phase, time.time())
        marks[phase + "_end"] = time.time()

    store = open_store(url)
    t0 = time.time()
    res = import_votes(store, path, progress=progress)
    span = {ph: marks[ph + "_end"] - marks[ph] for ph in ("validate", "publish", "activate") if ph in marks}
    print(json.dumps({"start": t0, "end": time.time(), "added": res.added, "span": span}))


def child_tui(url: str, stop_file: str, every: float) -> None:
    store = open_store(url)
    with store.transaction() as s:
        ann = get_or_create_annotator(s, "tui-bench").id
        tids = [add_triplet(s, 1, 1, 2 + i, 3 + i)[0].id for i in range(50)]
    samples, errors, k = [], [], 0
    while not os.path.exists(stop_file):
        t = time.time()
        try:
            with write_turn(store.engine), store.transaction() as s:  # as the queue's answer path does
                record_vote(s, tids[k % len(tids)], ann, "first" if k % 2 else "second", source="tui")
            samples.append((t, time.time() - t))
        except OperationalError as exc:
            errors.append(str(exc.orig))
        k += 1
        time.sleep(every)
    print(json.dumps({"samples": samples, "errors": errors}))


def run_case(backend: str, url: str, tmp: str, a: argparse.Namespace) -> dict:
    votes = os.path.join(tmp, "votes.csv")
    make_votes(votes, a.n, a.docs)
    setup_store(url, tmp, a.docs)
    stop = os.path.join(tmp, f"stop-{uuid.uuid4().hex}")
    tui = subprocess.Popen([sys.executable, __file__, "--child", "tui", url, stop, str(a.every)],
                           stdout=subprocess.PIPE,
                           text=True)
    time.sleep(a.warmup)
    p = subprocess.Popen([sys.executable, __file__, "--child", "import", url, votes], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    assert p.stdout is not None
    imp = json.loads(p.stdout.read().strip().splitlines()[-1])
    if status != 0:
        raise SystemExit(f"import failed on {backend}")
    open(stop, "w").close()
    out, _ = tui.communicate(timeout=120)
    t = json.loads(out.strip().splitlines()[-1])
    during = sorted(dt for ts, dt in t["samples"] if imp["start"] <= ts <= imp["end"])
    q = statistics.quantiles(during, n=20) if len(during) >= 20 else [max(during or [0])] * 19
    seconds = imp["end"] - imp["start"]
    return {"backend": backend, "rows_s": imp["added"] / seconds, "seconds": seconds,
            "cpu_s": usage.ru_utime + usage.ru_stime, "load": os.getloadavg()[0],
            "peak_mb": usage.ru_maxrss / 1024, "write_s": imp["span"].get("publish", 0.0),
            "activate_s": imp["span"].get("activate", 0.0), "answers": len(during),
            "p50_ms": 1000 * statistics.median(during) if during else 0.0, "p95_ms": 1000 * q[18],
            "max_ms": 1000 * max(during or [0]), "locked": len(t["errors"]), "added": imp["added"]}


def peer(backend: str, url: str, tmp: str) -> float:
    """Rows/s of a bare load of the same CSV (no validation): sqlite-utils, or COPY."""
    votes = os.path.join(tmp, "votes.csv")
    with open(votes) as f:
        n = sum(1 for _ in f) - 1
    t = time.perf_counter()
    if backend == "sqlite":
        subprocess.run([os.path.join(BIN, "sqlite-utils"), "insert", os.path.join(tmp, "peer.db"), "votes", votes,
                        "--csv"], check=True, capture_output=True)
    else:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]) as conn:
            conn.execute("CREATE TEMP TABLE votes (criterion text, anchor text, a text, b text, annotator text, "
                         "choice text, latency_ms text)")
            copy_sql = "COPY votes FROM STDIN (FORMAT csv, HEADER)"
            with conn.cursor() as cur, open(votes, "rb") as f, cur.copy(copy_sql) as cp:
                while data := f.read(1 << 20):
                    cp.write(data)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--every", type=float, default=0.05, help="seconds between two TUI answers")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds the TUI process gets to start")
    ap.add_argument("--no-peer", action="store_true", help="skip the bare load of the same file (sqlite-utils/COPY)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        (child_import if a.child[0] == "import" else child_tui)(*a.child[1:3], *map(float, a.child[3:]))  # type: ignore[operator]
        return
    rows = []
    for backend in a.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url, drop = f"sqlite:///{os.path.join(tmp, 'bench.db')}", None
            else:
                schema = "bench_" + uuid.uuid4().hex[:10]
                admin = create_engine(PG, isolation_level="AUTOCOMMIT")
                with admin.connect() as c:
                    c.execute(text(f'CREATE SCHEMA "{schema}"'))
                url, drop = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}", schema
            try:
                r = run_case(backend, url, tmp, a)
                r["peer_rows_s"] = float("nan") if a.no_peer else peer(backend, url, tmp)
                rows.append(r)
            finally:
                if drop:
                    with admin.connect() as c:
                        c.execute(text(f'DROP SCHEMA "{drop}" CASCADE'))
                    admin.dispose()
    print(f"{a.n} votes, {a.docs} documents; a TUI answer every {a.every * 1000:.0f} ms during the import")
    print(f"{'backend':10} {'rows/s':>8} {'seconds':>8} {'CPU s':>6} {'peak MB':>8} {'write s':>8} {'activate s':>10} "
          f"{'answers':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'locked':>6} {'peer rows/s':>11} "
          f"{'ours/peer':>9} {'load 1m':>7}")
    for r in rows:
        print(f"{r['backend']:10} {r['rows_s']:8.0f} {r['seconds']:8.1f} {r['cpu_s']:6.1f} {r['peak_mb']:8.0f} "
              f"{r['write_s']:8.2f} {r['activate_s']:10.2f} {r['answers']:7d} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} "
              f"{r['max_ms']:7.0f} {r['locked']:6d} {r['peer_rows_s']:11.0f} {r['rows_s'] / r['peer_rows_s']:9.3f} "
              f"{r['load']:7.2f}")
    print("write s: the votes written (SQLite: an invisible batch by short transactions; PostgreSQL: one transaction,"
          " which other writers do not wait for); activate s: the SQLite transaction "
          "that makes them visible (the longest any other writer can wait); load 1m: os.getloadavg() at the end")
    print("peer: sqlite-utils insert --csv (SQLite) / COPY (PostgreSQL): a bare load, no validation, no votes")


if __name__ == "__main__":
    main()
