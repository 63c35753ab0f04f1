"""The README's first command: `condsim-annot demo` runs the whole loop offline on CHAMP.

Once, on SQLite (the demo has no backend-specific logic; the store's backends are tested where
they matter).  "A second run adds nothing" is checked step by step on the same store: ingest,
propose and the silver votes are the demo's only additive steps."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from condsim_annot.db import open_store
from condsim_annot.demo import DEMO_CRITERIA, SIMULATED_CROWD, add_silver_votes
from condsim_annot.ingest import ingest
from condsim_annot.propose.select import propose


@pytest.mark.backends("sqlite")
def test_demo_runs_whole_loop(cli, db_url, tmp_path, champ_cache, monkeypatch):
    monkeypatch.setenv("CONDSIM_CACHE", champ_cache)  # MiniLM's CHAMP vectors (conftest); encoding: test_propose
    folder = tmp_path / "demo"
    r = cli("demo", "--dir", folder, "--budget", "30", "--no-tui")
    lines = r.output
    assert "1. ingest" in lines and "270 added, 0 already there" in lines
    assert lines.count("3. propose") == 2 and "30 triplets added" in lines
    assert "30 silver votes from CHAMP's annotations" in lines and "sim-spammer (100% random)" in lines
    assert lines.count("5. calibrate") == 2 and "annotator beta: " in lines
    assert lines.count("7. report") == 2 and "--overlap 5" in lines  # 4 silver/simulated annotators + you
    st = json.loads(cli("status", "--json").output)
    assert st["documents"] == 270
    for name in ("same-technique", "same-topic"):
        c = st["criteria"][name]
        # CHAMP's silver annotator and three simulated ones vote every triplet
        assert c["triplets"] == 30 and c["votes"]["import"] == 4 * 30
        assert c["gold"] > 0
        html = (folder / f"report-{name}.html").read_text()
        assert "<img" in html and "http://" not in html.split("<body", 1)[1][:200]
    ds = load_from_disk(str(folder / "export-same-topic-st"))
    assert ds.column_names[:3] == ["anchor", "positive", "negative"] and len(ds) == st["criteria"]["same-topic"]["gold"]
    # a second run adds nothing: each additive step again, on the same store and files
    store = open_store(db_url)
    try:
        assert ingest(store, [str(folder / "champ.jsonl")], corpus="champ").added == 0
        for c in DEMO_CRITERIA:
            assert propose(store, c["name"], methods="embedding,bm25", budget=30).added == 0
            assert add_silver_votes(store, c["name"]) == 0
            assert all(add_silver_votes(store, c["name"], who, noise=nz) == 0 for who, nz in SIMULATED_CROWD)
    finally:
        store.close()
    assert json.loads(cli("status", "--json").output)["criteria"]["same-topic"]["votes"]["import"] == 4 * 30
    # calibration tells the simulated spammer (100% random answers) from CHAMP's own labels
    cal = json.loads(cli("calibrate", "same-topic", "--json").output)
    beta = {a["name"]: a["beta"] for a in cal["annotators"]}
    assert beta["sim-spammer"] < beta["champ-silver"] and beta["sim-spammer"] == min(beta.values())
