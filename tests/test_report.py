"""The report: one self-contained HTML file, JSON with stable keys, Markdown (views: tests/test_views.py)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from test_calibrate_pipeline import simulate

REPORT_KEYS = {
    "report_version",
    "criterion",
    "store",
    "command",
    "calibration_command",
    "data_version",
    "params",
    "n_votes",
    "n_items",
    "components",
    "tie_parameter",
    "gold",
    "alpha",
    "kappa",
    "annotators",
    "attention",
    "cant_tell_rate",
    "ill_defined",
    "agreement_matrix",
    "judge_calibration",
    "votes_over_time",
    "score_distribution",
    "leaderboard",
    "model",
    "calibration",
}


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
    assert (
        doc["data_version"]["active_votes"] == doc["n_votes"]["active"]
        and len(doc["data_version"]["votes_sha256"]) == 16
    )
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
    assert len(imgs) == 7 and all(s.startswith("data:image/png;base64,") for s in imgs)
    cal = doc["calibration"]["votes"]
    assert doc["model"]["name"] == "triplet" and 0 <= cal["ece"] <= 0.2 and sum(b["n"] for b in cal["bins"]) == cal["n"]
    assert "Calibration (measured)" in html and "reliability (cross-validated)" not in html  # the title is in the PNG
    for needle in (
        "score distribution",
        "annotator reliability",
        "agreement matrix",
        "LM-judge reliability diagram",
        "votes over time",
        "position bias",
        "Ill-defined triplets",
        "condsim-annot calibrate crit",
        "ann-bad",
    ):
        assert needle in html, needle
    md = m.read_text()
    assert md.startswith("# Calibration report: `crit`") and "ann-bad ⚠" in md and "Ill-defined" in md
    res = cli("report", "crit", expect_ok=False)
    assert res.exit_code == 1 and "--html" in res.output


def test_report_needs_a_calibration_run(cli, store, tmp_path):
    simulate(store, n_docs=8, n_anchors=1, per_anchor=4, attention_per_anchor=0)
    res = cli("report", "crit", "--html", tmp_path / "r.html", expect_ok=False)
    assert res.exit_code == 1 and "no calibration run yet" in res.output


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
        b = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = b.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        page.screenshot(path=str(tmp_path / "r.png"), full_page=True)
        widths = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        b.close()
    assert len(widths) == 7 and all(w > 100 for w in widths)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert (tmp_path / "r.png").stat().st_size > 50_000
