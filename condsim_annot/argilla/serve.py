"""``condsim-annot argilla serve``: the real argilla-server, locally, without Docker.

argilla-server 2.8.0 pins old FastAPI/Pydantic, so it lives in its own virtual
environment (created on first use with ``python -m venv`` + ``pip install``; one
default, ``~/.cache/condsim-annot/argilla-venv``, the one ``scripts/bootstrap.sh`` builds).  The
server runs ``server_entry.py`` (shipped in this package) with SQLite in the home
folder, a search engine over its own SQL tables (no Elasticsearch) and in-process
background jobs (no Redis).  An owner user is created or updated on every start.

One server per home: ``HOME/server.lock`` is held (flock) by the server for as long as it
runs, so a second ``serve`` on the same home is refused before it touches anything.  The home
is private (0700); the server runs with umask 077, so its database (which holds the API key)
is 0600, and ``credentials.json`` is created 0600 (never world-readable, not even briefly).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CondsimError

SERVER_VERSION = "2.8.0"
SERVER_REQUIREMENT = f"argilla-server=={SERVER_VERSION}"
DEFAULT_HOME = Path("~/.cache/condsim-annot/argilla")
DEFAULT_VENV = Path("~/.cache/condsim-annot/argilla-venv")  # scripts/bootstrap.sh builds the same one
ENV_VENV = "CONDSIM_ARGILLA_VENV"
HERE = Path(__file__).resolve().parent
ENTRY = HERE / "server_entry.py"


def default_home() -> Path:
    return Path(os.environ.get("CONDSIM_ARGILLA_HOME") or DEFAULT_HOME).expanduser()


def default_venv() -> Path:
    """The server's virtual environment: $CONDSIM_ARGILLA_VENV, else ~/.cache/condsim-annot/argilla-venv."""
    return Path(os.environ.get(ENV_VENV) or DEFAULT_VENV).expanduser()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: it holds the owner's credentials."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file: created with that mode beside ``path`` (O_EXCL), then renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _marker(venv: Path) -> Path:
    return venv / f".condsim-argilla-server-{SERVER_VERSION}"


def ensure_server_venv(venv: Path, *, log: Callable[[str], None] = lambda m: None) -> Path:
    """Create the server's virtual environment once (a marker file records success)."""
    venv = venv.expanduser().resolve()
    py = _venv_python(venv)
    if _marker(venv).exists() and py.exists():
        return py
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / (venv.name + ".lock")
    import fcntl

    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes creating the same venv wait for each other
        if _marker(venv).exists() and py.exists():
            return py
        log(f"creating the Argilla server environment in {venv} (one time, a few minutes)")
        if not py.exists():
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if r.returncode != 0:
                raise CondsimError(f"cannot create a virtual environment in {venv}: {r.stderr.strip()[-500:]}")
        log(f"installing {SERVER_REQUIREMENT} from PyPI")
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", SERVER_REQUIREMENT],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip()[-1500:]
            raise CondsimError(f"cannot install {SERVER_REQUIREMENT} into {venv} (is PyPI reachable?):\n{tail}")
        _marker(venv).write_text(SERVER_REQUIREMENT + "\n")
    return py


@dataclass
class Credentials:
    username: str
    password: str
    api_key: str


def load_credentials(home: Path, *, username: str = "owner", api_key: str | None = None,
                     password: str | None = None) -> Credentials:
    """Credentials kept in ``home/credentials.json`` (0600); given values override them."""
    path = home / "credentials.json"
    saved: dict = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(path.read_text())
    creds = Credentials(
        username=username or saved.get("username") or "owner",
        password=password or saved.get("password") or secrets.token_urlsafe(12),
        api_key=api_key or saved.get("api_key") or "condsim." + secrets.token_urlsafe(24),
    )
    if len(creds.api_key) < 8:
        raise CondsimError("the API key must have at least 8 characters")
    if len(creds.password) < 8:
        raise CondsimError("the password must have at least 8 characters")
    private_dir(home)
    write_private(path, json.dumps(creds.__dict__, indent=2) + "\n")
    return creds


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalServer:
    """A running local argilla-server (a child process).  Use as a context manager."""

    def __init__(self, *, home: Path, port: int = 6900, host: str = "127.0.0.1", api_key: str | None = None,
                 password: str | None = None, username: str = "owner", venv: Path | None = None,
                 redis_url: str | None = None, log: Callable[[str], None] = lambda m: None):
        self.home = Path(home).expanduser().resolve()
        self.port, self.host = port, host
        self.venv = Path(venv).expanduser() if venv else default_venv()
        self.redis_url = redis_url
        self.log = log
        self._wanted = {"username": username, "api_key": api_key, "password": password}
        self.creds = Credentials("", "", "")  # read in start(), once this server holds the home
        self.proc: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.logfile = self.home / "server.log"
        self.lockfile = self.home / "server.lock"
        self._lock: int | None = None  # fd holding the flock on server.lock (shared with the children)
        self.static_tmp = self.home / "static-tmp"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")}
        env.update(
            ARGILLA_HOME_PATH=str(self.home / "data"),
            ARGILLA_DATABASE_URL=f"sqlite+aiosqlite:///{self.home / 'data' / 'argilla.db'}?check_same_thread=False",
            ARGILLA_SEARCH_ENGINE="condsim-sql",
            ARGILLA_ENABLE_TELEMETRY="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            CONDSIM_ARGILLA_PASSWORD=self.creds.password,
            CONDSIM_ARGILLA_API_KEY=self.creds.api_key,
            PYTHONUNBUFFERED="1",
        )
        if self.redis_url:
            env["ARGILLA_REDIS_URL"] = self.redis_url
        env.pop("PYTHONPATH", None)
        return env

    def acquire_home(self) -> None:
        """Take ``HOME/server.lock`` (flock) or refuse: another server runs from this home.

        The lock is passed on to the server processes, so it stays held as long as any of them runs,
        even when this process is killed; only its holder may clean the home's static copies."""
        private_dir(self.home)
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 500, 0).decode(errors="replace").strip()
            os.close(fd)
            raise CondsimError(f"an Argilla server already runs from {self.home} ({owner or 'pid unknown'}); "
                               "stop it first, or give this one another --home") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.url}\n".encode(), 0)
        self._lock = fd

    def release_home(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def start(self, timeout: float = 120.0) -> LocalServer:
        if not _port_free(self.host, self.port):
            raise CondsimError(f"port {self.port} on {self.host} is in use: pass another --port")
        self.acquire_home()
        try:
            self.creds = load_credentials(self.home, **self._wanted)
            self._spawn(ensure_server_venv(self.venv, log=self.log))
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, py: Path) -> None:
        private_dir(self.home / "data")
        for stale in self.home.glob("static-tmp*"):  # left by a killed server (we hold the home: none runs)
            shutil.rmtree(stale, ignore_errors=True)
        for f in self.home.joinpath("data").glob("argilla.db*"):  # made before the server ran with umask 077
            os.chmod(f, 0o600)
        with open(self.logfile, "ab") as logf:
            os.chmod(self.logfile, 0o600)
            if self.redis_url:
                self.worker = self._popen([str(py), str(ENTRY), "worker", "--static-tmp",
                                           str(self.home / "static-tmp-worker")], logf)
            self.proc = self._popen([str(py), str(ENTRY), "serve", "--host", self.host, "--port", str(self.port),
                                     "--username", self.creds.username, "--static-tmp", str(self.static_tmp)], logf)

    def _popen(self, args: list[str], logf: Any) -> subprocess.Popen:
        """A server process: private files (umask 077), holding the home's lock while it lives."""
        return subprocess.Popen(args, env=self._env(), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                umask=0o077, pass_fds=(self._lock,) if self._lock is not None else ())

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:  # one client: each new one loads the CA bundle (~0.1 s of CPU)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
                    raise CondsimError(f"the Argilla server exited with code {self.proc.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/api/v1/status").status_code == 200:
                        return
                time.sleep(0.3)
        self.stop()
        raise CondsimError(f"the Argilla server did not answer within {timeout:.0f} s; see {self.logfile}")

    def stop(self, timeout: float = 20.0) -> None:
        for p in (self.proc, self.worker):
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in (self.proc, self.worker):
            if p is None:
                continue
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        if self._lock is not None:  # only the home's holder removes the static copies
            for stale in self.home.glob("static-tmp*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.release_home()

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(server: LocalServer, print_fn: Callable[[str], None]) -> int:
    """Start, print URL and credentials, and stop cleanly on Ctrl-C / SIGTERM."""
    stopping = {"flag": False}

    def on_term(signum, frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (`cmd &`)
    try:
        server.start()
        print_fn(server)
        code = server.wait()
        if code != 0 and not stopping["flag"]:
            tail = server.logfile.read_text(errors="replace")[-2000:]
            raise CondsimError(f"the Argilla server stopped with code {code}:\n{tail}")
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
