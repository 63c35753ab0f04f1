"""The report: one self-contained HTML file, JSON with stable keys, Markdown; views of the corpus."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from test_calibrate_pipeline import simulate

REPORT_KEYS = {"report_version", "criterion", "store", "command", "calibration_command", "data_version", "params", "n_votes",
               "n_items", "components", "tie_parameter", "gold", "alpha", "kappa", "annotators", "attention",
               "cant_tell_rate", "ill_defined", "agreement_matrix", "judge_calibration", "votes_over_time",
               "score_distribution", "leaderboard"}


def _add_cant_tell(store, n=2):
    """A triplet most annotators cannot judge: it must be flagged as ill-defined."""
    from sqlalchemy import select

    from condsim_annot.models import Annotator, Triplet
    from condsim_annot.store_api import record_vote

    with store.transaction() as s:
        t = s.scalars(select(Triplet).order_by(Triplet.id)).first()
        for a in s.scalars(select(Annotator).order_by(Annotator.id)).all()[:3]:
            record_vote(s, t.id, a.id, "cant_tell", source="review")
        return t.id


def test_report_html_json_md(cli, store, tmp_path):
    simulate(store, n_docs=16, n_anchors=4, per_anchor=10, attention_per_anchor=2, seed=7)
    ill = _add_cant_tell(store)
    cli("calibrate", "crit")
    h, j, m = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.md"
    res = cli("report", "crit", "--html", h, "--json", j, "--md", m)
    assert str(h) in res.stdout
    doc = json.loads(j.read_text())
    assert set(doc) == REPORT_KEYS
    assert doc["command"].startswith("condsim-annot report crit --html")
    assert doc["calibration_command"] == "condsim-annot calibrate crit"
    assert doc["data_version"]["active_votes"] == doc["n_votes"]["active"] and len(doc["data_version"]["votes_sha256"]) == 16
    assert [t["triplet_id"] for t in doc["ill_defined"]] == [ill]
    assert [f["name"] for f in doc["attention"]["failed"]] == ["ann-bad"]
    am = doc["agreement_matrix"]
    assert len(am["matrix"]) == len(am["annotators"]) == 5
    jc = doc["judge_calibration"]
    assert [x["judge"] for x in jc] == ["ann-llm"] and jc[0]["bins"] and 0 <= jc[0]["ece"] <= 1
    assert jc[0]["reference"] == "human" and sum(b["n"] for b in jc[0]["bins"]) == jc[0]["n"]
    assert [x["annotator"] for x in doc["leaderboard"]["judges"]] == ["ann-llm"]
    html = h.read_text()
    # self-contained: no external URL anywhere, every image inlined
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    imgs = re.findall(r"<img[^>]*src='([^']*)'", html)
    assert len(imgs) == 6 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for needle in ("score distribution", "annotator reliability", "agreement matrix", "LM-judge reliability diagram",
                   "votes over time", "position bias", "Ill-defined triplets", "condsim-annot calibrate crit", "ann-bad"):
        assert needle in html, needle
    md = m.read_text()
    assert md.startswith("# Calibration report: `crit`") and "ann-bad ⚠" in md and "Ill-defined" in md
    res = cli("report", "crit", expect_ok=False)
    assert res.exit_code == 1 and "--html" in res.output
    cli("views", "crit", "--html", tmp_path / "v.html", "--json", tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text())["maps"][0]["method"] == "mds-pair-scores"


def test_report_needs_a_calibration_run(cli, store, tmp_path):
    simulate(store, n_docs=8, n_anchors=1, per_anchor=4, attention_per_anchor=0)
    res = cli("report", "crit", "--html", tmp_path / "r.html", expect_ok=False)
    assert res.exit_code == 1 and "no calibration run yet" in res.output


def test_views_maps_and_method_agreement(sqlite_store, tmp_path):
    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.exporters.views import criterion_map, method_agreement, write_views

    simulate(sqlite_store, n_docs=16, n_anchors=4, per_anchor=10, attention_per_anchor=0, seed=8)
    calibrate(sqlite_store, "crit", alpha_bootstrap=0)
    m = criterion_map(sqlite_store, "crit", color_by="group")
    assert m["method"] in ("mds-pair-scores", "pca-embeddings") and m["colour"] == "metadata:group"
    assert {p["label"] for p in m["points"]} <= {"g0", "g1", "g2"} and m["silhouette"] is not None
    assert -1 <= m["silhouette"] <= 1
    m2 = criterion_map(sqlite_store, "crit")
    assert m2["colour"] == "clusters" and len({p["label"] for p in m2["points"]}) >= 2
    # method agreement from stored method scores: a method agrees perfectly with itself and a copy,
    # and a reversed method has top-k overlap below 1
    pytest.importorskip("condsim_annot.propose.tables")
    from sqlalchemy import select

    from condsim_annot.models import Triplet
    from condsim_annot.propose.tables import TripletMargin

    rng = __import__("numpy").random.default_rng(0)
    with sqlite_store.transaction() as s:
        for t in s.scalars(select(Triplet)).all():
            f, g = float(rng.normal()), float(rng.normal())
            for name, a, b in (("a", f, g), ("copy", 2 * f + 1, 2 * g + 1), ("reverse", -f, -g)):
                s.add(TripletMargin(triplet_id=t.id, method=name, score_first=a, score_second=b, margin=a - b))
    ag = method_agreement(sqlite_store, "crit", k=3)
    i = {n: k for k, n in enumerate(ag["methods"])}
    assert ag["cka"][i["a"]][i["copy"]] == pytest.approx(1.0)
    assert ag["jaccard_at_k"][i["a"]][i["copy"]] == pytest.approx(1.0)
    assert ag["jaccard_at_k"][i["a"]][i["reverse"]] < 1.0
    out = write_views(sqlite_store, ["crit"], html=str(tmp_path / "v.html"), json_path=str(tmp_path / "v.json"))
    html = open(out).read()
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") == 2
    assert json.loads((tmp_path / "v.json").read_text())["maps"][0]["criterion"] == "crit"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(sqlite_store, tmp_path):
    """Rendered offline: every image decodes, and the page asks for nothing outside itself."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.exporters.report import write_report

    simulate(sqlite_store, n_docs=14, n_anchors=3, per_anchor=8, attention_per_anchor=1, seed=9)
    calibrate(sqlite_store, "crit", alpha_bootstrap=0)
    html = tmp_path / "r.html"
    write_report(sqlite_store, "crit", html=str(html))
    requests = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        page.screenshot(path=str(tmp_path / "r.png"), full_page=True)
        widths = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        b.close()
    assert len(widths) == 6 and all(w > 100 for w in widths)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert (tmp_path / "r.png").stat().st_size > 50_000


def test_views_use_cached_criterion_embeddings(sqlite_store, tmp_path, monkeypatch):
    """When the proposers' cache holds the criterion-prompted embeddings of every document, the map is their PCA."""
    pytest.importorskip("condsim_annot.propose.cache")
    import numpy as np

    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.criteria import default_instruction
    from condsim_annot.exporters.views import criterion_map
    from condsim_annot.models import Criterion, Document
    from condsim_annot.propose.cache import EmbeddingCache, model_key, query_key
    from condsim_annot.propose.embedding import default_model_path

    monkeypatch.setenv("CONDSIM_CACHE", str(tmp_path / "cache"))
    simulate(sqlite_store, n_docs=12, n_anchors=3, per_anchor=8, attention_per_anchor=0, seed=12)
    calibrate(sqlite_store, "crit", alpha_bootstrap=0)
    assert criterion_map(sqlite_store, "crit")["method"] == "mds-pair-scores"
    from sqlalchemy import select

    with sqlite_store.session() as s:
        crit = s.scalars(select(Criterion)).one()
        docs = s.scalars(select(Document)).all()
    prompt = default_instruction(crit)
    model = default_model_path()
    cache = EmbeddingCache(tmp_path / "cache" / "emb", model_key(model), model=model, dim=4)
    rng = np.random.default_rng(0)
    centres = {"g0": [5, 0, 0, 0], "g1": [0, 5, 0, 0], "g2": [0, 0, 5, 0]}
    vecs = np.array([np.array(centres[d.meta["group"]]) + rng.normal(0, 0.1, 4) for d in docs], dtype=np.float32)
    cache.append([query_key(prompt, d.content_hash) for d in docs], vecs)
    m = criterion_map(sqlite_store, "crit", color_by="group")
    assert m["method"] == "pca-embeddings"
    assert m["silhouette"] > 0.8  # the groups are the embedding clusters
