"""Python child processes for the concurrency tests, forked from a server that imported the store stack once.

A ``python -c`` child spends ~1.2 s of CPU importing SQLAlchemy, psycopg and condsim_annot before its first
statement, and these tests start a dozen of them. ``python_c`` starts the same code as a real OS process with
its own connections, pipes for stdin/stdout/stderr and an exit code, like ``subprocess.Popen([python, "-c",
code, *args], text=True)``; only the imports are done once (multiprocessing's forkserver, preloaded), and the
forkserver itself is a fresh interpreter: no thread or connection of the test process is inherited.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import IO

PRELOAD = ["sqlalchemy", "psycopg", "condsim_annot.db", "condsim_annot.store_api", "condsim_annot.queue"]
_ctx: ForkServerContext | None = None


def _context() -> ForkServerContext:
    global _ctx
    if _ctx is None:
        ctx = multiprocessing.get_context("forkserver")
        assert isinstance(ctx, ForkServerContext)
        ctx.set_forkserver_preload(PRELOAD)
        _ctx = ctx
    return _ctx


def _run(code: str, argv: list[str], stdin: Connection, stdout: Connection, stderr: Connection) -> None:
    """The child: its pipes become fds 0/1/2, then ``code`` runs as ``__main__`` with ``sys.argv``."""
    for conn, fd in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(conn.fileno(), fd)
        conn.close()
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own standard streams)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    sys.argv = ["-c", *argv]
    try:
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class Child:
    """The part of ``subprocess.Popen``'s interface the tests use (text mode)."""

    def __init__(self, code: str, *args: object):
        ctx = _context()
        ends = [ctx.Pipe(duplex=False) for _ in range(3)]  # (reader, writer) each
        (in_r, in_w), (out_r, out_w), (err_r, err_w) = ends
        self._proc = ctx.Process(target=_run, args=(code, [str(a) for a in args], in_r, out_w, err_w), daemon=True)
        self._proc.start()
        for c in (in_r, out_w, err_w):
            c.close()
        self.stdin: IO[str] = _text(in_w, "w")
        self.stdout: IO[str] = _text(out_r, "r")
        self.stderr: IO[str] = _text(err_r, "r")
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(["python", "-c", "..."], timeout or 0)
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Close stdin, read stdout and stderr to the end, wait for the exit."""
        if not self.stdin.closed:
            self.stdin.close()
        out: list[str] = []
        err: list[str] = []
        readers = [threading.Thread(target=lambda f=f, acc=acc: acc.append(f.read()), daemon=True)
                   for f, acc in ((self.stdout, out), (self.stderr, err))]
        for t in readers:
            t.start()
        self.wait(timeout)
        for t in readers:
            t.join(timeout)
        return "".join(out), "".join(err)


def _text(conn: Connection, mode: str) -> IO[str]:
    fd = os.dup(conn.fileno())
    conn.close()
    return open(fd, mode, buffering=1 if mode == "w" else -1)  # noqa: SIM115 (owned by the Child)


def python_c(code: str, *args: object) -> Child:
    """``code`` in a new process with ``sys.argv[1:] == args`` (see the module docstring)."""
    return Child(code, *args)
