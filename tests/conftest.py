"""Shared fixtures.

Every test that takes ``store``, ``db_url`` or ``cli`` runs twice: on SQLite (a fresh file)
and on the real PostgreSQL server (a fresh schema in database ``test``, dropped afterwards),
unless it is marked ``@pytest.mark.backends("sqlite")``.  Set CONDSIM_TEST_PG to point at another
server.

``db_url`` is a fresh *migrated* store: the migrations run once per session into a template
(a SQLite file copied per test; for PostgreSQL their DDL, rendered once by Alembic, replayed into
each new schema), which saves about 0.3 s (SQLite) and 1 s (PostgreSQL) per test.
``empty_db_url`` is a fresh empty database, for the tests of the migrations themselves.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import close_all_sessions

from condsim_annot.cli import main
from condsim_annot.db import Store, alembic_config, open_store
from condsim_annot.demo import champ_records

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_URL = os.environ.get("CONDSIM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # the CI script starts PostgreSQL; a missing server is a failure
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store, checkpointed so that the file alone is complete (copied per test)."""
    path = tmp_path_factory.mktemp("template") / "condsim.db"
    store = open_store(f"sqlite:///{path}")
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


@pytest.fixture(scope="session")
def pg_schema_ddl(pg_admin: Engine) -> str | None:
    """The migrations' DDL for PostgreSQL, rendered once by Alembic (offline mode); None: migrate per test."""
    buf = io.StringIO()
    cfg = alembic_config(pg_admin)
    cfg.output_buffer = buf
    try:
        command.upgrade(cfg, "heads", sql=True)
    except Exception as exc:  # a migration that cannot render offline: every test migrates online instead
        warnings.warn(f"PostgreSQL test schemas migrate per test (offline DDL failed: {exc})", stacklevel=1)
        return None
    return buf.getvalue()


def _new_pg_schema(admin: Engine, ddl: str | None) -> tuple[str, Callable[[], None]]:
    """A new schema (with ``ddl`` applied) and how to drop it."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
        if ddl:
            c.exec_driver_sql(f'SET search_path TO "{schema}"; {ddl}; SET search_path TO DEFAULT')

    def drop() -> None:
        close_all_sessions()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    return schema, drop


class PgSchemas:
    """Migrated PostgreSQL schemas, emptied after each test and handed to the next (TRUNCATE ... RESTART
    IDENTITY is ~10x cheaper than creating and dropping a schema with every table and index)."""

    def __init__(self, admin: Engine, ddl: str | None):
        self.admin, self.ddl = admin, ddl
        self.free: list[str] = []
        self.drops: dict[str, Callable[[], None]] = {}

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        schema, drop = _new_pg_schema(self.admin, self.ddl)
        self.drops[schema] = drop
        return schema

    def give_back(self, schema: str) -> None:
        """Empty every table but the migration history and restart the ids at 1, in one transaction
        (DELETE with foreign-key triggers off: cheaper than TRUNCATE's new files on a small test store);
        a schema a leaked connection still locks is left behind."""
        close_all_sessions()
        with self.admin.connect() as c:
            tables = c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tablename <> "
                                    "'alembic_version'"), {"s": schema}).scalars().all()
            seqs = c.execute(text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s"),
                             {"s": schema}).scalars().all()
            sql = ["BEGIN", "SET LOCAL lock_timeout = '10s'", "SET LOCAL session_replication_role = replica"]
            sql += [f'DELETE FROM "{schema}"."{t}"' for t in tables]
            sql += [f"SELECT setval('\"{schema}\".\"{q}\"', 1, false)" for q in seqs]
            try:
                c.exec_driver_sql("; ".join(sql + ["COMMIT"]))
            except OperationalError:
                c.exec_driver_sql("ROLLBACK")
                warnings.warn(f"test schema {schema} still locked; left behind", stacklevel=1)
                return
        self.free.append(schema)

    def close(self) -> None:
        for schema in self.free:
            self.drops.pop(schema)()


@pytest.fixture(scope="session")
def pg_schemas(pg_admin: Engine, pg_schema_ddl: str | None) -> Iterator[PgSchemas]:
    pool = PgSchemas(pg_admin, pg_schema_ddl)
    yield pool
    pool.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the store runs on each backend, unless it is marked ``@pytest.mark.backends("sqlite")``
    (its behaviour does not depend on the backend) or parametrises ``backend`` itself."""
    if "backend" not in metafunc.fixturenames:
        return
    for m in metafunc.definition.iter_markers("parametrize"):
        names = m.args[0] if m.args else m.kwargs.get("argnames", "")
        if "backend" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return
    marker = metafunc.definition.get_closest_marker("backends")
    backends = list(marker.args) if marker else BACKENDS
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown backend(s) {sorted(unknown)}")
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated store of ``backend`` (nothing in it but the schema)."""
    if backend == "sqlite":
        path = tmp_path / "condsim.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    pool: PgSchemas = request.getfixturevalue("pg_schemas")
    schema = pool.take()
    yield _pg_schema_url(schema)
    pool.give_back(schema)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh empty database of ``backend``: opening it runs every migration."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    schema, drop = _new_pg_schema(request.getfixturevalue("pg_admin"), None)
    yield _pg_schema_url(schema)
    drop()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_template: Path) -> Iterator[Store]:
    path = tmp_path / "condsim.db"
    shutil.copyfile(sqlite_template, path)
    s = open_store(f"sqlite:///{path}")
    yield s
    s.close()


@pytest.fixture
def cli(db_url: str) -> Callable[..., Result]:
    """Run the real CLI (click's runner) against the test store: ``cli('status', '--json')``."""
    runner = CliRunner()

    def run(*args: object, input: str | None = None, expect_ok: bool = True) -> Result:
        res = runner.invoke(main, ["--db", db_url, *map(str, args)], input=input, catch_exceptions=False)
        if expect_ok and res.exit_code != 0:
            raise AssertionError(f"condsim-annot {' '.join(map(str, args))} exited {res.exit_code}:\n{res.output}")
        return res

    return run


@pytest.fixture(scope="session")
def champ_problems() -> list[dict]:
    """The 270 CHAMP competition problems (MIT, PyPI package champ-dataset)."""
    return champ_records()
