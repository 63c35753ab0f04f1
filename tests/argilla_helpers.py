"""Shared pieces of the Argilla tests (no tests here): the real server (started once), users, seeding.

The server's virtual environment (pip install argilla-server==2.8.0, ~1-2 min the
first time) is cached in ~/.cache/condsim-annot/argilla-venv (or $CONDSIM_ARGILLA_VENV)
so later runs start the server in ~10 s.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import httpx

from condsim_annot.llm.endpoint import default_tls

VENV = Path(os.environ.get("CONDSIM_ARGILLA_VENV", "~/.cache/condsim-annot/argilla-venv")).expanduser()
API_KEY = "condsim-test-owner-key"
PASSWORD = "annotate-me-123"
#: The library's one TLS context for every test client: httpx loads the CA bundle for each new client (~0.1 s of
#: CPU), and the tests make hundreds of clients (the local server speaks plain HTTP; it is never used to connect).
TLS = default_tls()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Users:
    """Annotator accounts that talk to the server over the web UI's own REST calls."""

    def __init__(self, url: str, owner_key: str):
        self.url = url
        self.owner = httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": owner_key}, timeout=30, verify=TLS)
        self.tokens: dict[str, str] = {}
        self.responses: dict[tuple, str] = {}

    def create(self, username: str, workspace_name: str) -> None:
        ws = {w["name"]: w["id"] for w in self.owner.get("/api/v1/me/workspaces").json()["items"]}
        users = {u["username"]: u["id"] for u in self.owner.get("/api/v1/users").json()["items"]}
        if username not in users:
            r = self.owner.post("/api/v1/users", json={"first_name": username, "username": username,
                                                        "password": PASSWORD, "role": "annotator"})
            r.raise_for_status()
            users[username] = r.json()["id"]
        r = self.owner.post(f"/api/v1/workspaces/{ws[workspace_name]}/users", json={"user_id": users[username]})
        assert r.status_code in (201, 409), r.text
        # sign in like the web UI does
        tok = httpx.post(self.url + "/api/v1/token", data={"username": username, "password": PASSWORD}, timeout=30,
                         verify=TLS)
        tok.raise_for_status()
        self.tokens[username] = tok.json()["access_token"]

    def as_user(self, username: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[username]}"}, timeout=30,
                            verify=TLS)

    def respond(self, username: str, record_id: str, status: str, label: str | None = None,
                rationale: str | None = None) -> dict:
        """Create or update this user's response to a record (POST, then PUT like the UI)."""
        values: dict = {}
        if label is not None:
            values["choice"] = {"value": label}
        if rationale is not None:
            values["rationale"] = {"value": rationale}
        with self.as_user(username) as c:
            body = {"values": values, "status": status}
            rid = self.responses.get((username, record_id))
            if rid is None:
                r = c.post(f"/api/v1/records/{record_id}/responses", json=body)
            else:
                r = c.put(f"/api/v1/responses/{rid}", json=body)
            assert r.status_code in (200, 201), r.text
            self.responses[(username, record_id)] = r.json()["id"]
            return r.json()


def seed(store, *, n_docs: int = 8, criterion: str = "topic", llm_vote: bool = True) -> dict:
    """A corpus, a criterion and a few canonical triplets (and one LM-judge vote)."""
    from condsim_annot.models import Corpus, Criterion, Document
    from condsim_annot.store_api import add_triplet, get_or_create_annotator, record_vote

    with store.transaction() as s:
        c = Corpus(name="c-" + uuid.uuid4().hex[:6])
        s.add(c)
        s.flush()
        docs = []
        for i in range(n_docs):
            d = Document(corpus_id=c.id, ext_id=f"d{i}", text=f"Problem {i}: prove it by *induction* on n={i}",
                         content_hash=f"{i:064d}")
            s.add(d)
            docs.append(d)
        s.flush()
        cr = Criterion(name=criterion, description="Same proof technique", corpus_id=c.id)
        s.add(cr)
        s.flush()
        triplets = []
        for a, x, y in [(0, 1, 2), (3, 5, 4), (1, 3, 6), (2, 7, 0), (4, 6, 1)]:
            t, _ = add_triplet(s, cr.id, docs[a].id, docs[x].id, docs[y].id, method="ensemble",
                               strategy="disagreement", meta={"margin": 0.1 * (a + 1)})
            triplets.append(t.id)
        if llm_vote:
            j = get_or_create_annotator(s, "judge-llm", kind="llm", model="m")
            record_vote(s, triplets[0], j.id, "second", source="llm", confidence=0.8)
        return {"criterion": cr.name, "criterion_id": cr.id, "triplets": triplets,
                "docs": {d.id: d.text for d in docs}, "doc_ids": [d.id for d in docs], "corpus_id": c.id}


_SERVER = {}


def shared_server(tmp_root: Path):
    """One real argilla-server for the whole test session (stopped by ``stop_shared_server`` when the session
    ends: an xdist worker exits without running atexit, which left the server running)."""
    if "server" not in _SERVER:
        import atexit

        from condsim_annot.argilla.serve import LocalServer

        srv = LocalServer(home=tmp_root / "argilla-home", port=free_port(), api_key=API_KEY, password=PASSWORD,
                          venv=VENV, log=print)
        srv.start(timeout=180)
        atexit.register(srv.stop)
        _SERVER["server"] = srv
    return _SERVER["server"]


def stop_shared_server() -> None:
    srv = _SERVER.pop("server", None)
    if srv is not None:
        srv.stop()
