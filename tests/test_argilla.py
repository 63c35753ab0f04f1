"""Argilla push/pull against the real argilla-server 2.8.0, started by the tests.

Reviewers answer over the same REST calls the web UI makes (sign in with
POST /api/v1/token, POST /records/{id}/responses, PUT /responses/{id}).
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from argilla_helpers import API_KEY, TLS, VENV, Users, free_port, seed, shared_server, stop_shared_server
from click.testing import CliRunner
from sqlalchemy import select

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory):
    yield shared_server(tmp_path_factory.mktemp("argilla"))
    stop_shared_server()


@pytest.fixture(scope="session")
def users(argilla_server):
    return Users(argilla_server.url, API_KEY)


@pytest.fixture
def env(argilla_server, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", API_KEY)
    return argilla_server


def owner(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": API_KEY}, timeout=30, verify=TLS)


def dataset_id(url: str, name: str, workspace: str) -> str:
    with owner(url) as c:
        ws = {w["name"]: w["id"] for w in c.get("/api/v1/me/workspaces").json()["items"]}
        for d in c.get("/api/v1/me/datasets").json()["items"]:
            if d["name"] == name and d["workspace_id"] == ws[workspace]:
                return d["id"]
    raise AssertionError(f"no dataset {name}")


def records(url: str, ds_id: str) -> dict[int, dict]:
    """triplet id -> record (with responses and suggestions)."""
    with owner(url) as c:
        r = c.get(f"/api/v1/datasets/{ds_id}/records", params={"include": ["responses", "suggestions"], "limit": 1000})
        r.raise_for_status()
        return {int(x["external_id"]): x for x in r.json()["items"]}


def names():
    return "ds-" + uuid.uuid4().hex[:8], "ws-" + uuid.uuid4().hex[:6]


def argilla_votes(store, triplet_id=None):
    from condsim_annot.models import Annotator, Vote

    with store.session() as s:
        q = select(Vote, Annotator).join(Annotator, Annotator.id == Vote.annotator_id).where(Vote.source == "argilla")
        if triplet_id is not None:
            q = q.where(Vote.triplet_id == triplet_id)
        return [(v, a) for v, a in s.execute(q.order_by(Vote.id)).all()]


# --------------------------------------------------------------------------- push + responses + pull


def test_push_respond_pull_roundtrip(store, cli, env, users):
    from condsim_annot.models import Triplet
    from condsim_annot.store_api import add_triplet, to_canonical_choice

    data = seed(store)
    ds, ws = names()
    url = env.url

    out = cli("argilla", "push", "topic", "--workspace", ws, "--dataset", ds, "--min-submitted", "2").output
    assert "added 5 records, 0 already there" in out
    dsid = dataset_id(url, ds, ws)
    with owner(url) as c:
        info = c.get(f"/api/v1/datasets/{dsid}").json()
        assert info["distribution"] == {"strategy": "overlap", "min_submitted": 2}
        fields = sorted(f["name"] for f in c.get(f"/api/v1/datasets/{dsid}/fields").json()["items"])
        assert fields == ["anchor", "candidate_a", "candidate_b", "criterion"]
        assert all(f["settings"]["use_markdown"] for f in c.get(f"/api/v1/datasets/{dsid}/fields").json()["items"])
        qs = {q["name"]: q for q in c.get(f"/api/v1/datasets/{dsid}/questions").json()["items"]}
        assert qs["choice"]["settings"]["type"] == "label_selection"
        assert [o["value"] for o in qs["choice"]["settings"]["options"]] == ["A", "B", "tie", "cant_tell"]
        assert qs["rationale"]["required"] is False

    recs = records(url, dsid)
    assert sorted(recs) == sorted(data["triplets"])
    with store.session() as s:
        trip = {t.id: t for t in s.scalars(select(Triplet).where(Triplet.id.in_(data["triplets"]))).all()}
    swapped = {}
    for tid, rec in recs.items():
        t = trip[tid]
        sw = bool(rec["metadata"]["swapped"])
        swapped[tid] = sw
        a, b = (t.second_id, t.first_id) if sw else (t.first_id, t.second_id)
        assert rec["fields"]["candidate_a"] == data["docs"][a]
        assert rec["fields"]["candidate_b"] == data["docs"][b]
        assert rec["fields"]["anchor"] == data["docs"][t.anchor_id]
        assert rec["metadata"]["triplet_id"] == tid and rec["metadata"]["criterion_name"] == "topic"
        assert rec["metadata"]["method"] == "ensemble" and rec["metadata"]["margin"] == pytest.approx(t.meta["margin"])
        assert not rec.get("suggestions"), "suggestions only with --suggestions"

    # idempotent push; new triplets append
    assert "added 0 records, 5 already there" in cli("argilla", "push", "topic", "-w", ws, "-d", ds).output
    with store.transaction() as s:
        d = data["doc_ids"]
        new_t, created = add_triplet(s, data["criterion_id"], d[5], d[6], d[7], method="random")
        assert created
        new_tid = new_t.id
    assert "added 1 records, 5 already there" in cli("argilla", "push", "topic", "-w", ws, "-d", ds).output
    recs = records(url, dsid)
    assert len(recs) == 6 and new_tid in recs

    # two reviewers answer over the web UI's REST calls
    users.create("ann1", ws)
    users.create("ann2", ws)
    t0, t1, t2, t3 = data["triplets"][:4]
    rid = {tid: r["id"] for tid, r in recs.items()}
    users.respond("ann1", rid[t0], "submitted", "A", rationale="both use induction")
    users.respond("ann1", rid[t1], "submitted", "B")
    users.respond("ann2", rid[t0], "submitted", "tie")
    users.respond("ann2", rid[t2], "discarded")
    users.respond("ann2", rid[t3], "draft", "A")

    out = cli("argilla", "pull", "topic", "--dataset", ds).output
    assert "4 new votes, 0 changed, 0 unchanged, 1 skips (discards), 1 drafts ignored" in out
    assert "annotators: ann1, ann2" in out

    votes = argilla_votes(store)
    assert len(votes) == 4
    by = {(a.name, v.triplet_id): v for v, a in votes}
    assert all(a.kind == "human" for _, a in votes)
    v = by[("ann1", t0)]
    assert v.choice == to_canonical_choice("first", swapped[t0]) and v.swapped == swapped[t0]
    assert v.rationale == "both use induction" and v.state == "active" and v.source == "argilla"
    assert v.external_id.startswith("argilla:")
    assert by[("ann1", t1)].choice == to_canonical_choice("second", swapped[t1])
    assert by[("ann1", t1)].swapped == swapped[t1]
    assert by[("ann2", t0)].choice == "tie"
    assert by[("ann2", t2)].choice == "skip"
    assert ("ann2", t3) not in by  # drafts are not votes

    # the record reached min_submitted=2 (distribution job ran without Redis)
    assert records(url, dsid)[t0]["status"] == "completed"
    assert records(url, dsid)[t1]["status"] == "pending"

    # pulling again adds nothing
    out = cli("argilla", "pull", "topic", "--dataset", ds).output
    assert "0 new votes, 0 changed, 4 unchanged" in out
    assert len(argilla_votes(store)) == 4

    # a changed response supersedes the old vote; the draft becomes a vote when submitted
    users.respond("ann1", rid[t0], "submitted", "B", rationale="changed my mind")
    users.respond("ann2", rid[t3], "submitted", "cant_tell")
    out = cli("argilla", "pull", "topic", "--dataset", ds).output
    assert "1 new votes, 1 changed, 3 unchanged" in out
    hist = [v for v, a in argilla_votes(store, t0) if a.name == "ann1"]
    assert [h.state for h in hist] == ["superseded", "active"]
    assert hist[1].replaces_id == hist[0].id
    assert hist[1].choice == to_canonical_choice("second", swapped[t0]) and hist[1].rationale == "changed my mind"
    v3 = [v for v, a in argilla_votes(store, t3) if a.name == "ann2"]
    assert len(v3) == 1 and v3[0].choice == "cant_tell"
    # the LM judge's vote is untouched and never became a response
    assert all(len(r.get("responses") or []) <= 2 for r in records(url, dsid).values())
    assert "0 new votes, 0 changed, 5 unchanged" in cli("argilla", "pull", "topic", "-d", ds).output


def test_presented_order_is_balanced_and_stable():
    from condsim_annot.argilla.remote import presented_swapped

    flips = [presented_swapped("proof-v1", i) for i in range(1, 401)]
    assert 150 < sum(flips) < 250
    assert flips == [presented_swapped("proof-v1", i) for i in range(1, 401)]
    assert flips != [presented_swapped("proof-v2", i) for i in range(1, 401)]


def test_suggestions_only_with_flag(sqlite_store, env):
    from condsim_annot.argilla.remote import connect, push

    data = seed(sqlite_store)
    client = connect()
    ds, ws = names()
    res = push(sqlite_store, "topic", client=client, workspace=ws, dataset=ds, min_submitted=1, suggestions=True)
    assert res.added == 5 and res.suggestions == 1 and res.created_dataset
    recs = records(env.url, dataset_id(env.url, ds, ws))
    t0 = data["triplets"][0]
    sugg = recs[t0]["suggestions"]
    assert len(sugg) == 1
    # the judge voted canonical "second": shown as A when the record is swapped
    assert sugg[0]["value"] == ("A" if recs[t0]["metadata"]["swapped"] else "B")
    assert sugg[0]["agent"] == "judge-llm" and sugg[0]["score"] == pytest.approx(0.8)
    assert all(not r.get("responses") for r in recs.values()), "LM-judge votes are never responses"
    assert all(not r.get("suggestions") for tid, r in recs.items() if tid != t0)

    ds2, _ = names()
    res2 = push(sqlite_store, "topic", client=client, workspace=ws, dataset=ds2, min_submitted=1)
    assert res2.suggestions == 0
    assert all(not r.get("suggestions") for r in records(env.url, dataset_id(env.url, ds2, ws)).values())


# --------------------------------------------------------------------------- errors


class _FakeServer:
    """A local HTTP server that is not Argilla 2.x (answers /api/v1/version as told)."""

    def __init__(self, status: int, body: dict):
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(outer.body).encode())

            def log_message(self, *a):
                pass

        self.status, self.body = status, body
        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_clear_errors(sqlite_store, argilla_server, monkeypatch, tmp_path):
    import argilla as rg

    from condsim_annot.argilla.remote import ArgillaError, check_version, connect, pull, push
    from condsim_annot.cli import main

    seed(sqlite_store)
    with pytest.raises(ArgillaError, match="cannot reach the Argilla server"):
        connect(f"http://127.0.0.1:{free_port()}", "whatever-key")
    with pytest.raises(ArgillaError, match="rejected the API key"):
        connect(argilla_server.url, "not-the-key-123")
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    with pytest.raises(ArgillaError, match="no Argilla API key"):
        connect(argilla_server.url, None)
    with pytest.raises(ArgillaError, match="version mismatch.*1.29.0"):
        check_version("1.29.0")
    old = _FakeServer(200, {"version": "1.29.0"})
    try:
        with pytest.raises(ArgillaError, match="version mismatch"):
            connect(old.url, "k" * 10)
    finally:
        old.close()
    other = _FakeServer(404, {"detail": "Not Found"})
    try:
        with pytest.raises(ArgillaError, match="no Argilla 2.x API"):
            connect(other.url, "k" * 10)
    finally:
        other.close()

    # a dataset made by another tool
    client = connect(argilla_server.url, API_KEY)
    ds, ws = names()
    rg.Workspace(name=ws, client=client).create()
    settings = rg.Settings(fields=[rg.TextField(name="text")],
                           questions=[rg.LabelQuestion(name="label", labels=["x", "y"])])
    rg.Dataset(name=ds, workspace=ws, settings=settings, client=client).create()
    with pytest.raises(ArgillaError, match="another schema"):
        push(sqlite_store, "topic", client=client, workspace=ws, dataset=ds)
    with pytest.raises(ArgillaError, match="another schema"):
        pull(sqlite_store, "topic", client=client, dataset=ds)
    with pytest.raises(ArgillaError, match="no dataset 'nope"):
        pull(sqlite_store, "topic", client=client, dataset="nope-" + ds)

    # the CLI prints one error line, exit 1, no traceback
    runner = CliRunner()
    db = f"sqlite:///{sqlite_store.engine.url.database}"
    res = runner.invoke(main, ["--db", db, "argilla", "push", "topic", "-w", ws, "-d", ds,
                               "--api-url", argilla_server.url, "--api-key", API_KEY])
    assert res.exit_code == 1 and "error:" in res.output and "another schema" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(main, ["--db", db, "argilla", "push", "no-such", "-w", ws, "-d", ds + "x",
                               "--api-url", argilla_server.url, "--api-key", API_KEY])
    assert res.exit_code == 1 and "no criterion named 'no-such'" in res.output
    res = runner.invoke(main, ["--db", db, "argilla", "pull", "topic", "-d", ds,
                               "--api-url", f"http://127.0.0.1:{free_port()}", "--api-key", API_KEY])
    assert res.exit_code == 1 and "cannot reach" in res.output


# --------------------------------------------------------------------------- the SQL search engine


def test_search_engine_filters_sort_text_progress(sqlite_store, env, users):
    from condsim_annot.argilla.remote import connect, push

    seed(sqlite_store)
    ds, ws = names()
    push(sqlite_store, "topic", client=connect(), workspace=ws, dataset=ds, min_submitted=1)
    dsid = dataset_id(env.url, ds, ws)
    recs = records(env.url, dsid)
    tids = sorted(recs)
    search = f"/api/v1/datasets/{dsid}/records/search"

    def ids(resp):
        assert resp.status_code == 200, resp.text
        return [int(i["record"]["external_id"]) for i in resp.json()["items"]]

    with owner(env.url) as c:
        meta = lambda p: {"entity": "metadata", "metadata_property": p}  # noqa: E731
        r = c.post(search,
                   json={"filters": {"and": [{"type": "range", "scope": meta("triplet_id"), "ge": tids[1],
                                              "le": tids[2]}]}})
        assert sorted(ids(r)) == tids[1:3] and r.json()["total"] == 2
        sw = [t for t in tids if recs[t]["metadata"]["swapped"]]
        r = c.post(search, json={"filters": {"and": [{"type": "range", "scope": meta("swapped"), "ge": 1, "le": 1}]}})
        assert sorted(ids(r)) == sw
        r = c.post(search,
                   json={"filters": {"and": [{"type": "terms", "scope": meta("strategy"), "values": ["nope"]}]}})
        assert ids(r) == []
        r = c.post(search, json={"sort": [{"scope": meta("triplet_id"), "order": "desc"}]})
        assert ids(r) == sorted(tids, reverse=True)
        r = c.post(search, json={"sort": [{"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}]})
        assert len(ids(r)) == 5
        # text query, per field and across fields (AND of terms)
        anchor3 = [t for t in tids if recs[t]["fields"]["anchor"].startswith("Problem 3:")]
        r = c.post(search, json={"query": {"text": {"q": "problem 3", "field": "anchor"}}})
        assert ids(r) == anchor3
        r = c.post(search, json={"query": {"text": {"q": "induction -zebra"}}})
        assert len(ids(r)) == 5
        r = c.post(search, json={"query": {"text": {"q": "zebra"}}})
        assert ids(r) == []
        # metadata metrics for the UI's filters
        props = {p["name"]: p["id"] for p in c.get(f"/api/v1/me/datasets/{dsid}/metadata-properties").json()["items"]}
        m = c.get(f"/api/v1/metadata-properties/{props['method']}/metrics").json()
        assert m["total"] == 5 and m["values"] == [{"term": "ensemble", "count": 5}]
        m = c.get(f"/api/v1/metadata-properties/{props['triplet_id']}/metrics").json()
        assert (m["min"], m["max"]) == (tids[0], tids[-1])

    # the web UI's pending queue: the user's response status + record status
    users.create("queue-user", ws)
    users.respond("queue-user", recs[tids[0]]["id"], "submitted", "A")
    users.respond("queue-user", recs[tids[1]]["id"], "draft", "B")
    with users.as_user("queue-user") as u:
        body = {"filters": {"and": [
            {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
            {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]},
        ]}}
        r = u.post(f"/api/v1/me/datasets/{dsid}/records/search", params={"include": "responses"}, json=body)
        assert sorted(ids(r)) == tids[2:]
        body["filters"]["and"][0]["values"] = ["draft"]
        r = u.post(f"/api/v1/me/datasets/{dsid}/records/search", json=body)
        assert ids(r) == [tids[1]]
        metrics = u.get(f"/api/v1/me/datasets/{dsid}/metrics").json()
        flat = json.dumps(metrics)
        assert '"submitted": 1' in flat and '"draft": 1' in flat and '"pending": 3' in flat
    with owner(env.url) as c:
        prog = c.get(f"/api/v1/datasets/{dsid}/progress").json()
        assert prog["total"] == 5 and prog["completed"] == 1 and prog["pending"] == 4
        # without Redis the rq job behind a distribution change runs in-process
        r = c.patch(f"/api/v1/datasets/{dsid}", json={"distribution": {"strategy": "overlap", "min_submitted": 2}})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and records(env.url, dsid)[tids[0]]["status"] != "pending":
            time.sleep(0.3)
        assert records(env.url, dsid)[tids[0]]["status"] == "pending"


# --------------------------------------------------------------------------- `argilla serve` itself


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_serve_command_with_redis_prints_credentials_runs_jobs_and_stops_on_ctrl_c(sqlite_store, tmp_path):
    """The `argilla serve` command as a user runs it, with --redis-url (one server start covers both): it prints
    the credentials, jobs go through Redis to a worker that has the SQL engine registered, and Ctrl-C stops the
    server and its worker and removes the static copies."""
    home = tmp_path / "home"
    port = free_port()
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args = ["argilla", "serve", "--port", str(port), "--home", str(home), "--api-key", API_KEY, "--venv", str(VENV),
            "--redis-url", f"redis://127.0.0.1:{rport}/0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = "import sys; from condsim_annot.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "Ctrl-C stops the server" not in "".join(lines):
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        text = "".join(lines)
        assert f"Argilla is running at {url}" in text, text
        assert f"API key:  {API_KEY}" in text and "password:" in text and "username: owner" in text
        r = httpx.get(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": API_KEY})
        assert r.status_code == 200 and r.json()["role"] == "owner"
        assert httpx.get(f"{url}/").status_code == 200  # the web UI
        assert (home / "static-tmp").exists()
        creds = json.loads((home / "credentials.json").read_text())
        assert creds["api_key"] == API_KEY
        assert oct((home / "credentials.json").stat().st_mode)[-3:] == "600"
        _a_distribution_change_runs_as_an_rq_job(sqlite_store, url, home)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C (SIGTERM takes the same path)
        rc = proc.wait(60)
        redis.terminate()
        redis.wait(10)
    assert rc == 0
    assert not list(home.glob("static-tmp*")), "the static copies are removed"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/api/v1/status", timeout=2)
    fd = os.open(home / "server.lock", os.O_RDWR)
    try:  # every server process (the worker too) held the home's lock: free now means none outlived Ctrl-C
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _a_distribution_change_runs_as_an_rq_job(store, url: str, home: Path) -> None:
    from condsim_annot.argilla.remote import connect, push

    data = seed(store)
    ds, ws = names()
    push(store, "topic", client=connect(url, API_KEY), workspace=ws, dataset=ds, min_submitted=1)
    dsid = dataset_id(url, ds, ws)
    t0 = data["triplets"][0]
    u = Users(url, API_KEY)
    u.create("redis-user", ws)
    u.respond("redis-user", records(url, dsid)[t0]["id"], "submitted", "A")
    assert records(url, dsid)[t0]["status"] == "completed"
    with owner(url) as c:  # a distribution change is an rq job (update_dataset_records_status_job)
        r = c.patch(f"/api/v1/datasets/{dsid}", json={"distribution": {"strategy": "overlap", "min_submitted": 2}})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and records(url, dsid)[t0]["status"] != "pending":
        time.sleep(0.5)
    assert records(url, dsid)[t0]["status"] == "pending"
    assert "Job OK" in (home / "server.log").read_text()


def test_second_serve_on_a_running_home_leaves_the_first_server_whole(argilla_server):
    """Defect 8 against the real server: refused at once, the first server's UI keeps answering."""
    from condsim_annot.argilla.serve import LocalServer
    from condsim_annot.errors import CondsimError

    home = argilla_server.home
    before = sorted(p.relative_to(home) for p in (home / "static-tmp").rglob("*"))
    with pytest.raises(CondsimError, match="already runs from"):
        LocalServer(home=home, port=free_port(), api_key="other-key-123", venv=VENV).start(timeout=30)
    assert sorted(p.relative_to(home) for p in (home / "static-tmp").rglob("*")) == before and before
    assert httpx.get(argilla_server.url + "/").status_code == 200
    assert json.loads((home / "credentials.json").read_text())["api_key"] == API_KEY
    assert oct((home / "data" / "argilla.db").stat().st_mode & 0o777) == "0o600"
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_install_server_reuses_a_ready_venv():
    from condsim_annot.cli import main

    res = CliRunner().invoke(main, ["argilla", "install-server", "--venv", str(VENV)])
    assert res.exit_code == 0, res.output
    assert "argilla-server==2.8.0 is ready" in res.output
    for cmd in ("push", "pull", "serve", "install-server"):
        assert "Example" in CliRunner().invoke(main, ["argilla", cmd, "--help"]).output
