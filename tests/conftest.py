"""Shared fixtures.

Every test that takes ``store`` or ``db_url`` runs twice: on SQLite (a fresh file)
and on the real PostgreSQL server (a fresh schema in database ``test``, dropped
afterwards).  Set CONDSIM_TEST_PG to point at another server.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_URL = os.environ.get("CONDSIM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_admin():
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # the CI script starts PostgreSQL; a missing server is a failure
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {exc}")
    yield engine
    engine.dispose()


def make_db_url(backend: str, tmp_path, pg_admin_engine=None) -> tuple[str, object]:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'condsim.db'}", None
    schema = "t_" + uuid.uuid4().hex[:12]
    with pg_admin_engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with pg_admin_engine.connect() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    return _pg_schema_url(schema), drop


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
def db_url(backend, tmp_path, request):
    admin = request.getfixturevalue("pg_admin") if backend == "postgresql" else None
    url, drop = make_db_url(backend, tmp_path, admin)
    yield url
    if drop:
        from sqlalchemy.orm import close_all_sessions

        close_all_sessions()
        drop()


@pytest.fixture
def store(db_url):
    from condsim_annot.db import open_store

    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    from condsim_annot.db import open_store

    s = open_store(f"sqlite:///{tmp_path / 'condsim.db'}")
    yield s
    s.close()


@pytest.fixture
def cli(db_url):
    """Run the real CLI (click's runner) against the test store: ``cli('status', '--json')``."""
    from click.testing import CliRunner

    from condsim_annot.cli import main

    runner = CliRunner()

    def run(*args, input=None, expect_ok=True):
        res = runner.invoke(main, ["--db", db_url, *map(str, args)], input=input, catch_exceptions=False)
        if expect_ok and res.exit_code != 0:
            raise AssertionError(f"condsim-annot {' '.join(map(str, args))} exited {res.exit_code}:\n{res.output}")
        return res

    return run


@pytest.fixture(scope="session")
def champ_problems():
    """The 270 CHAMP competition problems (MIT, PyPI package champ-dataset)."""
    from condsim_annot.demo import champ_records

    return champ_records()
