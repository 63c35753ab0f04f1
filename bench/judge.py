"""LM-judge benchmark: wall time at concurrency 1 vs 8 against a server with artificial latency,
and a second run that is answered entirely from the call log.

    .venv/bin/python bench/judge.py [--n 40] [--latency 0.2] [--json]

The server is the project's own OpenAI-compatible test server (tests/openai_server.py),
real HTTP on 127.0.0.1, talked to by the real openai client.  Each of the N triplets is
judged in both orders, so a run sends 2N requests.  Expect the ratio to approach 8 as
latency dominates (the store writes and the client's own work are the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from openai_server import OpenAIServer, documents, seed_corpus, seed_triplets  # noqa: E402

WORDS = ["induction", "pigeonhole", "invariant", "parity", "extremal", "telescoping"]


def rule(req, n):
    d = documents(req)
    tech = lambda t: next((w for w in WORDS if w in t), "")  # noqa: E731
    return json.dumps({"answer": "A" if tech(d["A"]) == tech(d["anchor"]) else "B"})


def make_store(path: str, n: int):
    from condsim_annot.db import open_store

    store = open_store(f"sqlite:///{path}")
    import random

    rnd = random.Random(0)
    texts = [f"Problem {i}: solved with {WORDS[i % len(WORDS)]}, about topic {i % 7}." for i in range(max(12, n))]
    cid, ids = seed_corpus(store, texts)
    seen, triples = set(), []
    while len(triples) < n:
        a, x, y = rnd.sample(ids, 3)
        key = (a, min(x, y), max(x, y))
        if key not in seen:
            seen.add(key)
            triples.append((a, x, y))
    seed_triplets(store, cid, triples)
    return store


def timed_run(store, base_url: str, concurrency: int) -> dict:
    from condsim_annot.llm.judge import run_judge

    t = time.perf_counter()
    run = run_judge(store, "same-technique", model="bench-model", base_url=base_url, concurrency=concurrency)
    return {"concurrency": concurrency, "seconds": time.perf_counter() - t, "calls": run.stats.calls,
            "from_log": run.stats.cached, "votes_added": run.votes_added, "already_voted": run.already_voted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="triplets (each judged in both orders)")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server waits before each answer")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.pop("OPENAI_BASE_URL", None)
    import openai  # noqa: F401  (import once, outside the timings: it takes seconds)
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer(rule, latency=a.latency) as srv:
        s1, s8 = make_store(f"{tmp}/c1.db", a.n), make_store(f"{tmp}/c8.db", a.n)
        r1 = timed_run(s1, srv.base_url, 1)
        peak1 = srv.max_in_flight
        srv.reset()
        r8 = timed_run(s8, srv.base_url, 8)
        peak8 = srv.max_in_flight
        srv.reset()
        # a fresh judge process would also skip voted presentations; to measure the cache itself,
        # drop the votes (mark undone) and judge again: every answer must come from the log
        from sqlalchemy import update

        from condsim_annot.models import Vote

        with s8.transaction() as s:
            s.execute(update(Vote).values(state="undone"))
        rr = timed_run(s8, srv.base_url, 8)
        rr["server_calls"] = srv.calls
    res = {"n_triplets": a.n, "requests_per_run": 2 * a.n, "latency_s": a.latency,
           "c1": {**r1, "peak_in_flight": peak1}, "c8": {**r8, "peak_in_flight": peak8},
           "speedup_c8_vs_c1": r1["seconds"] / r8["seconds"], "rerun_from_log": rr}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{a.n} triplets x 2 orders = {2 * a.n} requests, server latency {a.latency * 1000:.0f} ms")
    print(f"  concurrency 1: {r1['seconds']:6.2f} s  ({r1['calls']} calls, peak in flight {peak1})")
    print(f"  concurrency 8: {r8['seconds']:6.2f} s  ({r8['calls']} calls, peak in flight {peak8})")
    print(f"  speed-up: {res['speedup_c8_vs_c1']:.2f}x")
    print(f"  re-run (votes dropped, same requests): {rr['seconds']:.2f} s, {rr['server_calls']} server calls, "
          f"{rr['from_log']} answered from the log, {rr['votes_added']} votes rebuilt")
    print("  a plain re-run skips voted presentations entirely (0 requests)")


if __name__ == "__main__":
    main()
