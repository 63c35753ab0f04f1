"""Shared fixtures.

Every test that takes ``store``, ``db_url`` or ``cli`` runs twice: on SQLite (a fresh file)
and on the real PostgreSQL server (a fresh schema in database ``test``, dropped afterwards),
unless it is marked ``@pytest.mark.backends("sqlite")``.  Set CONDSIM_TEST_PG to point at another
server.

``db_url`` is a fresh *migrated* store: the migrations run once per session into a template
(a SQLite file copied per test; for PostgreSQL their DDL, rendered once by Alembic, replayed into
each new schema), which saves about 0.3 s (SQLite) and 1 s (PostgreSQL) per test.
``empty_db_url`` is a fresh empty database, for the tests of the migrations themselves.

``champ_cache`` is an embedding cache folder (a per-test copy) already holding MiniLM's vectors of the 270
CHAMP problems, plain and with each demo criterion's prompt: encoded by the library's own encoder once, shared
by the xdist workers through a file lock and kept between runs under a key of everything the vectors depend on
(the encoding is most of the suite's CPU otherwise).
Tests about encoding itself use a fresh cache of their own.
"""

from __future__ import annotations

import fcntl
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
# xdist runs one worker per core: a worker's torch/BLAS threads beyond its share only spin against the other
# worker (MiniLM on CHAMP: 17 s CPU with 2 threads against 13 s with 1 on the 2-core box). Before any import of
# torch or numpy's BLAS; subprocesses inherit it. Only in the workers (the controller's environment is theirs; a
# value set by the user is kept).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _THREADS)

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


def _encode_champ(folder: Path, template: Path, records: list[dict]) -> None:
    """MiniLM's vectors of CHAMP in ``folder/emb`` as propose and views store them (the library's encoder)."""
    import json

    from sqlalchemy import select

    from condsim_annot.criteria import add_criterion, default_instruction, get_criterion
    from condsim_annot.ingest import ingest
    from condsim_annot.models import Document
    from condsim_annot.propose.cache import EmbeddingCache, model_key, query_key
    from condsim_annot.propose.embedding import encode_cached, load_embedder, resolve_model

    work = folder.parent / (folder.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copyfile(template, work / "condsim.db")
    (work / "champ.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    store = open_store(f"sqlite:///{work / 'condsim.db'}")
    try:
        ingest(store, [str(work / "champ.jsonl")], corpus="champ")
        from condsim_annot.demo import DEMO_CRITERIA

        for c in DEMO_CRITERIA:
            add_criterion(store, c["name"], c["description"], instruction=c["instruction"])
        with store.session() as s:
            rows = s.execute(select(Document.content_hash, Document.text).order_by(Document.id)).all()
            prompts = [default_instruction(get_criterion(s, c["name"])) for c in DEMO_CRITERIA]
    finally:
        store.close()
    hashes, texts = [h for h, _ in rows], [t for _, t in rows]
    name = resolve_model(None)
    model = load_embedder(name)
    emb = folder / "emb"
    encode_cached(model, EmbeddingCache(emb, model_key(name), model=name), hashes, lambda pos: [texts[p] for p in pos])
    query = EmbeddingCache(emb, model_key(name) + ".query", model=name)
    for prompt in prompts:
        encode_cached(model, query, [query_key(prompt, h) for h in hashes], lambda pos: [texts[p] for p in pos],
                      prompt=prompt)
    shutil.rmtree(work)


def _champ_cache_key(records: list[dict]) -> str:
    """What the CHAMP vectors depend on: the texts, the demo criteria, the model, the encoder's and cache's code."""
    import hashlib
    import inspect
    import json
    from importlib.metadata import version

    from condsim_annot import criteria
    from condsim_annot.demo import DEMO_CRITERIA
    from condsim_annot.propose import cache, embedding

    h = hashlib.sha256()
    for part in (json.dumps(records, sort_keys=True), json.dumps(DEMO_CRITERIA, sort_keys=True),
                 embedding.resolve_model(None), version("sentence-transformers"), version("torch"),
                 inspect.getsource(embedding), inspect.getsource(cache),
                 inspect.getsource(criteria.default_instruction)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


@pytest.fixture(scope="session")
def champ_embeddings(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path,
                     champ_problems: list[dict]) -> Path:
    """The CHAMP embedding cache, built once (whichever worker asks first; the others wait) and kept between
    runs under CONDSIM_TEST_CACHE (default ~/.cache/condsim-annot/tests), keyed by everything the vectors depend
    on, like a user's own cache: a change to the texts, criteria, model, encoder or cache code builds a new one.
    Set CONDSIM_TEST_CACHE to an empty folder for a cold run."""
    root = Path(os.environ.get("CONDSIM_TEST_CACHE") or Path.home() / ".cache" / "condsim-annot" / "tests")
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"champ-emb-{_champ_cache_key(champ_problems)}"
    with open(root / (folder.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / "complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            _encode_champ(folder, sqlite_template, champ_problems)
            (folder / "complete").touch()
    return folder


def _copy_cache(champ_embeddings: Path, dest: Path) -> str:
    shutil.copytree(champ_embeddings, dest, ignore=shutil.ignore_patterns("complete", "*.lock"))
    return str(dest)


@pytest.fixture
def champ_cache(champ_embeddings: Path, tmp_path: Path) -> str:
    """A private copy of the CHAMP embedding cache (a test may append to it)."""
    return _copy_cache(champ_embeddings, tmp_path / "emb-cache")


@pytest.fixture(scope="session")
def champ_cache_session(champ_embeddings: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One copy of the CHAMP embedding cache for a worker's whole session (tests that share it only add rows)."""
    return _copy_cache(champ_embeddings, tmp_path_factory.mktemp("champ-cache") / "cache")


# --------------------------------------------------------------------------- xdist: which file runs where, when

#: Files that cost most (seconds of a full run with two workers on the 2-core box, 2026-12-02, load ~3; CHAMP's
#: embeddings are encoded by whichever test asks first when the cache is cold: test_views_champ.py, handed out
#: first). Under ``--dist loadfile`` they are handed out first, longest first, so that no long file starts last and
#: the workers finish together; the other files follow by number of tests. Re-measure with ``--durations`` when a
#: file grows.
FILE_COST = {
    "tests/test_views_champ.py": 120,  # 37 with a warm CHAMP cache, ~80 more to encode it
    "tests/test_argilla.py": 112,  # with test_argilla_browser.py
    "tests/test_llm_llamacpp.py": 71,
    "tests/test_propose.py": 53,
    "tests/test_tui.py": 51,
    "tests/test_calibrate_pipeline.py": 51,
    "tests/test_queue.py": 42,
    "tests/test_export.py": 24,
    "tests/test_report.py": 24,
    "tests/test_votes_import.py": 22,
    "tests/test_train.py": 20,
    "tests/test_llm_client.py": 19,
    "tests/test_demo.py": 18,
    "tests/test_judge.py": 17,
    "tests/test_propose_llm.py": 16,
    "tests/test_concurrent_writers.py": 15,
    "tests/test_ingest.py": 13,
    "tests/test_tui_tmux.py": 11,
    "tests/test_views.py": 11,
}
#: Files run on the worker of another file: the Argilla browser test shares test_argilla.py's server.
SAME_WORKER = {"tests/test_argilla_browser.py": "tests/test_argilla.py"}


def _file_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(path, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (every worker collects the same order): costly files first, then by number of tests."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    count: dict[str, int] = {}
    for it in items:
        count[_file_of(it.nodeid)] = count.get(_file_of(it.nodeid), 0) + 1
    pos = {it.nodeid: i for i, it in enumerate(items)}
    items.sort(key=lambda it: (-FILE_COST.get(_file_of(it.nodeid), 0), -count[_file_of(it.nodeid)],
                               _file_of(it.nodeid), pos[it.nodeid]))


@pytest.hookimpl(optionalhook=True)  # -p no:xdist has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201 (xdist's types)
    """``--dist loadfile`` in the collection order above, one file at a time per worker (a worker gets its next
    file when its current one is nearly done, not two files ahead), SAME_WORKER files together."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # keep the collection order (xdist's default: most tests first)

    class CostOrderedFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _file_of(nodeid)

        def _reschedule(self, node) -> None:  # noqa: ANN001
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return CostOrderedFiles(config, log)
