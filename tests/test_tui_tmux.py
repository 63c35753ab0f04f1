"""The real CLI app in a real terminal (tmux, 80x24): keys in, SIGKILL mid-session, nothing
acknowledged is lost, and the next session resumes on the same screen."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TUI_TEXTS as TEXTS
from helpers import seed_triplets, votes_of
from sqlalchemy import select

from condsim_annot.db import open_store
from condsim_annot.models import Assignment, Document, Triplet

CLI = str(Path(sys.executable).parent / "condsim-annot")


class Tmux:
    def __init__(self, sock: Path):
        if not shutil.which("tmux"):
            pytest.fail("tmux is needed for this test: apt-get install -y tmux")
        self.sock = str(sock)

    def run(self, *args, check=True) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True, check=check).stdout

    def start(self, name: str, command: str) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        subprocess.run(["tmux", "-S", self.sock, "new-session", "-d", "-s", name, "-x", "80", "-y", "24", command],
                       check=True, env=env)

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name, check=False)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").strip())

    def wait(self, cond, what: str, timeout: float = 60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = cond()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_for_text(self, name: str, text: str, timeout: float = 60.0) -> str:
        return self.wait(lambda: (lambda sc: sc if text in sc else None)(self.screen(name)), repr(text), timeout)

    def kill_server(self) -> None:
        self.run("kill-server", check=False)


def _ext_ids(store, tid):
    with store.session() as s:
        t = s.get(Triplet, tid)
        ids = [t.anchor_id, t.first_id, t.second_id]
        docs = {d.id: d.ext_id for d in s.scalars(select(Document).where(Document.id.in_(ids)))}
        return docs[t.anchor_id], docs[t.first_id], docs[t.second_id]


def _ab_order(screen: str, ext: tuple) -> tuple:
    """The candidates' ids in left-to-right order, read from the line holding both box subtitles."""
    _, f, sec = ext
    for line in screen.splitlines():
        if f" {f} " in line and f" {sec} " in line:
            return (f, sec) if line.index(f" {f} ") < line.index(f" {sec} ") else (sec, f)
    raise AssertionError(f"candidates {f}, {sec} not both on screen:\n{screen}")


def test_sigkill_mid_session_loses_nothing_and_resumes(tmp_path):
    db = tmp_path / "store.db"
    store = open_store(f"sqlite:///{db}")
    seed_triplets(store, 10, texts=TEXTS)
    tm = Tmux(tmp_path / "tmux.sock")
    cmd = f"exec {CLI} --db {db} tui --annotator alice --seed 3 --attention-rate 0"
    try:
        tm.start("one", cmd)
        tm.wait(lambda: "Anchor" in tm.screen("one") and "/10" in tm.screen("one"), "the first triplet")
        for i in range(3):
            tm.keys("one", "a" if i % 2 == 0 else "b")
            # acknowledged = the screen says saved and shows the next triplet; the store must already have it
            tm.wait(lambda i=i: f"{i + 1}/10" in tm.screen("one"), f"vote {i + 1} acknowledged")
            assert len(votes_of(store, "alice")) == i + 1
        screen = tm.screen("one")
        assert "✓ saved" in screen
        os.kill(tm.pid("one"), signal.SIGKILL)
        tm.wait(lambda: "one" not in tm.run("list-sessions", check=False), "the killed app to go away")

        rows = votes_of(store, "alice", state=None)
        assert [v.state for v in rows] == ["active"] * 3 and [v.choice for v in rows].count("skip") == 0
        with store.session() as s:
            pending = s.scalars(select(Assignment).where(Assignment.state == "pending").order_by(Assignment.id)).all()
        # the triplet that was on screen when the process died (and at most the one claimed ahead)
        assert 1 <= len(pending) <= 2
        on_screen = _ext_ids(store, pending[0].triplet_id)
        assert all(e in screen for e in on_screen)

        tm.start("two", f"{CLI} --db {db} tui --annotator alice --seed 9 --attention-rate 0; echo APP-EXITED; sleep 60")
        tm.wait(lambda: "Anchor" in tm.screen("two"), "the resumed session")
        again = tm.wait_for_text("two", "3/10")
        assert all(e in again for e in on_screen)  # same triplet
        assert _ab_order(again, on_screen) == _ab_order(screen, on_screen)  # same A/B order
        tm.keys("two", "t")
        tm.wait(lambda: "4/10" in tm.screen("two"), "a vote after resume")
        tm.keys("two", "q")
        out = tm.wait_for_text("two", "APP-EXITED")
        assert "session of alice" in out and "1 answers" in out
        assert len(votes_of(store, "alice")) == 4
    finally:
        tm.kill_server()
        store.close()
