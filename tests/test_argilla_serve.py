"""`argilla serve` on one home: one server at a time, private files (no argilla-server needed: fast)."""

from __future__ import annotations

import json
import os
import re
import stat
import time

import pytest

from condsim_annot.argilla import serve
from condsim_annot.argilla.serve import LocalServer, default_venv, load_credentials
from condsim_annot.errors import CondsimError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def fake_python(tmp_path):
    """Stands in for the server venv's python: makes the database file, then runs until killed."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\ntouch \"$ARGILLA_HOME_PATH/argilla.db\"\nexec sleep 60\n")
    script.chmod(0o755)
    return script


def test_second_serve_on_the_same_home_is_refused_and_deletes_nothing(tmp_path, monkeypatch):
    """Defect 8: the second server used to remove the first one's static files (its UI then answered 500)."""
    monkeypatch.setattr(serve, "_port_free", lambda host, port: True)
    home = tmp_path / "home"
    first = LocalServer(home=home, port=6901, api_key="first-key-123")
    first.acquire_home()
    first.creds = load_credentials(home, api_key="first-key-123")
    first._spawn(fake_python(tmp_path))
    (home / "static-tmp" / "ui").mkdir(parents=True)  # the running server's copy of its web UI
    (home / "static-tmp" / "ui" / "index.html").write_text("<html>")
    try:
        first.release_home()  # the server process alone holds the home now (as after a kill -9 of the CLI)
        second = LocalServer(home=home, port=6902, api_key="second-key-456")
        with pytest.raises(CondsimError,
                           match=re.escape(f"already runs from {home} (pid {os.getpid()}, http://127.0.0.1:6901")):
            second.start(timeout=5)
        assert (home / "static-tmp" / "ui" / "index.html").read_text() == "<html>"
        assert json.loads((home / "credentials.json").read_text())["api_key"] == "first-key-123"
        deadline = time.monotonic() + 5
        while not (home / "data" / "argilla.db").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mode(home / "data" / "argilla.db") == 0o600  # the server runs with umask 077
        assert mode(home) == 0o700 and mode(home / "data") == 0o700
    finally:
        first.proc.kill()
        first.proc.wait(5)
    again = LocalServer(home=home, port=6903)
    again.acquire_home()  # free once the server process is gone
    again.release_home()


def test_credentials_are_created_private_without_a_chmod(tmp_path, monkeypatch):
    chmodded = []
    real_chmod = os.chmod
    monkeypatch.setattr(os, "chmod", lambda p, m, **kw: (chmodded.append(str(p)), real_chmod(p, m, **kw)))
    old = os.umask(0)  # the most permissive umask: the mode must come from os.open
    try:
        home = tmp_path / "home"
        creds = load_credentials(home, api_key="abcdefgh-key")
        path = home / "credentials.json"
        assert mode(path) == 0o600 and mode(home) == 0o700
        assert str(path) not in chmodded  # created 0600, never world-readable in between
        path.chmod(0o644)  # an old, too-open file is replaced, not rewritten in place
        load_credentials(home)
        assert mode(path) == 0o600
        assert json.loads(path.read_text())["api_key"] == creds.api_key
        assert [p.name for p in home.iterdir()] == ["credentials.json"]
    finally:
        os.umask(old)


def test_one_default_server_venv_shared_with_bootstrap(monkeypatch, tmp_path):
    """Issue 15: serve used HOME/venv while scripts/bootstrap.sh built ~/.cache/condsim-annot/argilla-venv."""
    monkeypatch.delenv("CONDSIM_ARGILLA_VENV", raising=False)
    expected = os.path.expanduser("~/.cache/condsim-annot/argilla-venv")
    assert str(default_venv()) == expected
    assert str(LocalServer(home=tmp_path / "h").venv) == expected
    boot = (os.path.dirname(__file__) + "/../scripts/bootstrap.sh")
    assert "${CONDSIM_ARGILLA_VENV:-$HOME/.cache/condsim-annot/argilla-venv}" in open(boot).read()
    monkeypatch.setenv("CONDSIM_ARGILLA_VENV", str(tmp_path / "v"))
    assert LocalServer(home=tmp_path / "h").venv == tmp_path / "v"

