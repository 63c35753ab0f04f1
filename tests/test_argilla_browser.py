"""A reviewer votes in the real Argilla web UI (headless Chromium) and `pull` finds the vote.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package;
``playwright install`` is never run.  The screenshot of the annotation page is saved
in $CONDSIM_SCREENSHOT_DIR (default: the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from argilla_helpers import API_KEY, PASSWORD, Users, seed, shared_server, stop_shared_server
from sqlalchemy import select

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CONDSIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory):
    yield shared_server(tmp_path_factory.mktemp("argilla"))
    stop_shared_server()


def test_vote_in_web_ui_then_pull(sqlite_store, argilla_server, tmp_path):
    if os.environ.get("CONDSIM_SKIP_BROWSER"):
        pytest.skip("CONDSIM_SKIP_BROWSER is set")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set CONDSIM_SKIP_BROWSER=1)")
    from playwright.sync_api import sync_playwright

    from condsim_annot.argilla.remote import connect, pull, push
    from condsim_annot.models import Annotator, Vote
    from condsim_annot.store_api import to_canonical_choice

    url = argilla_server.url
    seed(sqlite_store)
    ds, ws = "web-" + uuid.uuid4().hex[:6], "web-" + uuid.uuid4().hex[:6]
    res = push(sqlite_store, "topic", client=connect(url, API_KEY), workspace=ws, dataset=ds, min_submitted=1)
    users = Users(url, API_KEY)
    users.create("web-reviewer", ws)

    shot_dir = Path(os.environ.get("CONDSIM_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = shot_dir / "argilla-annotation.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url + "/sign-in")
            page.fill("input[name=Username]", "web-reviewer")
            page.fill("input[name=Password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/sign-in" not in u)
            page.goto(res.url)  # the dataset's annotation page, as printed by push
            page.wait_for_selector("label[for=choice_B]")
            page.wait_for_selector("text=Candidate A")
            anchor_text = page.locator(".text_field_component").nth(1).inner_text() if page.locator(
                ".text_field_component").count() > 1 else ""
            page.click("label[for=choice_B]")
            box = page.locator("[aria-label='Rationale (optional)'] ~ .container [contenteditable=true]")
            box.click()
            page.keyboard.type("B shares the induction step")
            page.screenshot(path=str(shot), full_page=True)
            page.click("button.button--submit")
            page.wait_for_selector("text=Submitted")
            # the server has the response once the UI moved on
            deadline = time.monotonic() + 30
            submitted = None
            while time.monotonic() < deadline and submitted is None:
                with httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": API_KEY}, timeout=30) as c:
                    dsid = res.url.split("/dataset/")[1].split("/")[0]
                    items = c.get(f"/api/v1/datasets/{dsid}/records", params={"include": "responses"}).json()["items"]
                for rec in items:
                    for r in rec.get("responses") or []:
                        if r["status"] == "submitted":
                            submitted = (rec, r)
                time.sleep(0.3)
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
    assert submitted is not None, "the web UI's vote did not reach the server"
    rec, resp = submitted
    assert resp["values"]["choice"]["value"] == "B"
    if anchor_text:
        assert rec["fields"]["anchor"].split(":")[0] in anchor_text

    out = pull(sqlite_store, "topic", client=connect(url, API_KEY), dataset=ds)
    assert out.added == 1 and out.annotators == {"web-reviewer"}
    with sqlite_store.session() as s:
        v, a = s.execute(select(Vote, Annotator).join(Annotator, Annotator.id == Vote.annotator_id)
                         .where(Vote.source == "argilla")).one()
    tid = int(rec["external_id"])
    swapped = bool(rec["metadata"]["swapped"])
    assert v.triplet_id == tid and a.name == "web-reviewer" and a.kind == "human"
    assert v.choice == to_canonical_choice("second", swapped) and v.swapped == swapped
    assert v.rationale == "B shares the induction step"
    if os.environ.get("CONDSIM_SCREENSHOT_DIR") is None:
        shutil.copy(shot, tmp_path / "kept.png")
