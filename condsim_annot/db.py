"""Opening the store: any SQLAlchemy URL, migrations applied on open.

SQLite is the embedded default (WAL journal, foreign keys on, a generous busy
timeout so several annotators on one machine never see "database is locked").
PostgreSQL works through ``postgresql+psycopg://``.  The schema is owned by the
Alembic migrations in ``migrations/`` (installed as ``condsim_annot.migrations``).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session

from .errors import CondsimError
from .models import load_all_models

DEFAULT_DB = "condsim.db"
ENV_DB = "CONDSIM_DB"
ENV_BUSY = "CONDSIM_SQLITE_BUSY_S"


class StoreError(CondsimError):
    pass


def resolve_url(db: str | None = None) -> str:
    """``--db`` or ``$CONDSIM_DB`` or ``./condsim.db``; a bare path means SQLite."""
    db = db or os.environ.get(ENV_DB) or DEFAULT_DB
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser()}"
    if db.startswith("postgresql://") or db.startswith("postgres://"):
        # psycopg 3 is the driver we ship; the bare scheme would ask for psycopg2.
        db = "postgresql+psycopg://" + db.split("://", 1)[1]
    return db


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # pragma: no cover - unparsable URL: strip anything like user:pass@
        return re.sub(r"//[^@/]*@", "//***@", url)


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: writers take turns through SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

def sqlite_file(engine: Engine) -> Path | None:
    """The store's file where it is a SQLite file a lock can sit beside (``flock`` available), else None."""
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if fcntl is None or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().resolve()


class _Turn:
    """One open ``<store>-writers.lock`` per store and process: ``flock`` belongs to the open file, so the
    process's threads queue on ``lock`` first; ``depth`` makes a nested turn of the same thread a no-op."""

    def __init__(self, fd: int):
        self.fd, self.lock, self.depth = fd, threading.RLock(), 0


_TURNS: dict[str, _Turn | None] = {}  # by the engine's database string; None: no turns there
_TURNS_GUARD = threading.Lock()


def _turn(engine: Engine) -> _Turn | None:
    key = f"{engine.dialect.name}:{engine.url.database}"
    with _TURNS_GUARD:
        if key not in _TURNS:
            path = sqlite_file(engine)
            try:
                fd = None if path is None else os.open(f"{path}-writers.lock", os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:  # a read-only folder: no turns, SQLite's busy handler alone
                fd = None
            _TURNS[key] = None if fd is None else _Turn(fd)
        return _TURNS[key]


@contextmanager
def write_turn(engine: Engine, *, then_yield_s: float = 0.0) -> Iterator[None]:
    """SQLite: writers that take turns here get the lock in a fair hand-off (the TUI's answers, an import's chunks).

    Why: SQLite's busy handler polls at growing intervals (up to 100 ms), so a writer that starts its next
    transaction right after each commit (an import, chunk after chunk) can win the lock race again and again:
    a TUI answer waited 1.7 s across 17 import chunks of 0.1 s.  A writer blocked in ``flock`` is woken when the
    lock is released; a writer in a loop passes ``then_yield_s`` so the woken one gets in first.  Writers that do
    not take turns still meet at SQLite's lock as before; PostgreSQL and stores in memory: a no-op.
    """
    turn = _turn(engine)
    if turn is None:
        yield
        return
    with turn.lock:
        if turn.depth == 0:
            fcntl.flock(turn.fd, fcntl.LOCK_EX)
        turn.depth += 1
        try:
            yield
        finally:
            turn.depth -= 1
            if turn.depth == 0:
                fcntl.flock(turn.fd, fcntl.LOCK_UN)
    if then_yield_s:
        time.sleep(then_yield_s)


def busy_timeout_s() -> float:
    """How long a SQLite writer waits for the lock (``$CONDSIM_SQLITE_BUSY_S``, default 60 s)."""
    raw = os.environ.get(ENV_BUSY, "60")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise StoreError(f"${ENV_BUSY} must be a number of seconds, not {raw!r}") from None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def check_sqlite_file(path: str) -> None:
    """Refuse a file that is not ours before connecting (connecting switches it to WAL and migrating adds tables).

    A text file is "not a SQLite database"; a SQLite database with tables but no
    migration history belongs to something else and is left untouched.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise StoreError(f"cannot open database {p}: it is a folder (pass a file path, e.g. {p / 'condsim.db'})")
    if not p.exists() or p.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{p} is not a condsim-annot store: {exc} (pass --db with a new or existing store)") from None
    if tables and "alembic_version" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{p} is a SQLite database of something else ({len(tables)} tables: {shown}; no condsim-annot "
            "migration history): refusing to add tables to it. Pass --db with a new file name."
        )


def make_engine(url: str) -> Engine:
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} ({exc})") from exc
    kwargs: dict = {"future": True}
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            parent = Path(u.database).expanduser().resolve().parent
            if not parent.exists():
                raise StoreError(f"cannot open database {redact(url)}: folder {parent} does not exist")
            check_sqlite_file(u.database)
        kwargs["connect_args"] = {"timeout": busy_timeout_s()}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if u.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        ca = {"connect_timeout": 10}
        kwargs["connect_args"] = ca
    try:
        return create_engine(url, **kwargs)
    except (ArgumentError, ImportError, TypeError, ValueError) as exc:  # missing driver, bad options
        raise StoreError(f"cannot use database {redact(url)}: {exc}") from exc


def migrations_dir() -> Path:
    return Path(str(resources.files("condsim_annot.migrations")))


def alembic_config(engine: Engine, connection=None):
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def _script_heads(engine: Engine) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine, target: str = "heads") -> None:
    """Apply migrations (idempotent; serialised across processes on PostgreSQL)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(74211)"))
        cfg = alembic_config(engine, conn)
        command.upgrade(cfg, target)


class Store:
    """An open store: an engine plus helpers.  Cheap to create; one per process."""

    def __init__(self, url: str, engine: Engine):
        self.url = url
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, **kw) -> Session:
        return Session(self.engine, expire_on_commit=False, **kw)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits as one unit, or not at all (closing the session rolls back)."""
        with self.session() as s:
            yield s
            s.commit()

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({redact(self.url)})"


def open_store(db: str | None = None, *, migrate: bool = True, create: bool = True) -> Store:
    """Open (and by default migrate) the store at ``db``.

    Raises :class:`StoreError` with a readable message when the database cannot be
    reached, so the CLI never prints a driver traceback.
    """
    load_all_models()
    url = resolve_url(db)
    engine = make_engine(url)
    if engine.dialect.name == "sqlite" and not create:
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise StoreError(f"no store at {path}: run `condsim-annot init` first (or pass --db)")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        engine.dispose()
        raise StoreError(f"cannot connect to database {redact(url)}: {reason}") from None
    if migrate:
        if current_revisions(engine) != _script_heads(engine):
            upgrade(engine)
    return Store(url, engine)


def table_names(store: Store) -> list[str]:
    return sorted(inspect(store.engine).get_table_names())
