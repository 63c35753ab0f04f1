"""Ingest, writing: batches of checked documents into ``document`` through the database driver.

sqlite3 or psycopg, not SQLAlchemy: each batch is one ``executemany`` (or ``COPY``) under a savepoint, and only a
batch that meets the unique index (corpus, id) is looked up row by row (duplicates, unchanged texts, ``--update``).
On SQLite, a large ingest drops the non-unique indexes of ``document`` and builds them again before the commit
(sorting once is much cheaper than a random B-tree insert per row); the unique index stays, and it is all one
transaction.  Also here: opening a migrated SQLite store with sqlite3 alone (SQLAlchemy and Alembic take about a
second to import), which the command uses.
"""

from __future__ import annotations

import ast
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CondsimError, InputError

DEFER_INDEXES_AFTER = 10_000  # SQLite: rows added before the non-unique indexes are rebuilt instead of updated
SORT_CACHE_KIB = 1000  # SQLite's page cache (and so sort buffer) while those indexes are built

Doc = tuple[str, str, str, str]  # ext_id, text, metadata (JSON), content hash


@dataclass
class IngestResult:
    corpus: str
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    files: list[str] = field(default_factory=list)


_DOC_COLUMNS = "corpus_id, ext_id, text, meta, content_hash, created_at"
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime on SQLite (UTC)


class Sql:
    """The statements of an ingest, on a sqlite3 or psycopg connection, in one transaction."""

    def __init__(self, conn: Any, dialect: str):
        if dialect not in ("sqlite", "postgresql"):
            raise CondsimError(f"ingest writes to SQLite or PostgreSQL, not {dialect}")
        self.conn, self.sqlite = conn, dialect == "sqlite"
        self.cur = conn.cursor()
        if self.sqlite:
            self.integrity_error: type[Exception] = sqlite3.IntegrityError
        else:
            import psycopg  # the PostgreSQL driver, imported only for PostgreSQL

            self.integrity_error = psycopg.IntegrityError

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.cur.execute(sql if self.sqlite else sql.replace("?", "%s"), params)

    def now(self) -> Any:
        now = datetime.now(timezone.utc)
        return now.strftime(_SQLITE_TIME) if self.sqlite else now

    def begin(self) -> None:
        if self.sqlite:  # take the write lock now (busy_timeout waits for it), not at the first insert
            self.cur.execute("BEGIN IMMEDIATE")

    def corpus_id(self, name: str, source: str) -> int:
        row = self.execute("SELECT id FROM corpus WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if self.sqlite:
            return int(self.execute("INSERT INTO corpus (name, source, created_at) VALUES (?, ?, ?)",
                                    (name, source, self.now())).lastrowid)
        return int(self.execute("INSERT INTO corpus (name, source, created_at) VALUES (?, ?, ?) RETURNING id",
                                (name, source, self.now())).fetchone()[0])

    def max_document_id(self) -> int:
        return int(self.execute("SELECT max(id) FROM document").fetchone()[0] or 0)

    def insert(self, corpus_id: int, stamp: Any, docs: list[Doc]) -> None:
        if self.sqlite:  # the two constants written into the statement (an int, a time we formatted): one
            # statement per ingest, prepared once (sqlite3 caches it)
            self.cur.executemany(f"INSERT INTO document ({_DOC_COLUMNS}) "
                                 f"VALUES ({int(corpus_id)}, ?, ?, ?, ?, '{stamp}')", docs)
            return
        with self.cur.copy(f"COPY document ({_DOC_COLUMNS}) FROM STDIN") as copy:
            for ext_id, text, meta, digest in docs:
                copy.write_row((corpus_id, ext_id, text, meta, digest, stamp))

    def insert_or_conflict(self, corpus_id: int, stamp: Any, docs: list[Doc]) -> bool:
        """Insert all ``docs``, or none of them and False when one hits the unique index (corpus, ext_id)."""
        self.cur.execute("SAVEPOINT ingest_batch")
        try:
            self.insert(corpus_id, stamp, docs)
        except self.integrity_error:
            self.cur.execute("ROLLBACK TO SAVEPOINT ingest_batch")
            self.cur.execute("RELEASE SAVEPOINT ingest_batch")
            return False
        self.cur.execute("RELEASE SAVEPOINT ingest_batch")
        return True

    def existing(self, corpus_id: int, ext_ids: list[str]) -> dict[str, tuple[int, str]]:
        """ext_id -> (document id, content hash) of those already stored."""
        sql = "SELECT id, ext_id, content_hash FROM document WHERE corpus_id = ? AND ext_id "
        if not self.sqlite:
            return {e: (i, h) for i, e, h in self.execute(sql + "= ANY(?)", (corpus_id, ext_ids)).fetchall()}
        found = {}
        for k in range(0, len(ext_ids), 500):  # under SQLite's 999 bound parameters (before 3.32)
            part = ext_ids[k:k + 500]
            marks = ", ".join("?" * len(part))
            for i, e, h in self.execute(sql + f"IN ({marks})", (corpus_id, *part)).fetchall():
                found[e] = (i, h)
        return found

    def update(self, doc_id: int, text: str, meta: str, digest: str) -> None:
        meta_sql = "?" if self.sqlite else "CAST(? AS json)"
        self.execute(f"UPDATE document SET text = ?, meta = {meta_sql}, content_hash = ?, updated_at = ? WHERE id = ?",
                     (text, meta, digest, self.now(), doc_id))

    def drop_plain_indexes(self) -> list[str]:
        """Drop the non-unique indexes of ``document`` (SQLite); their CREATE statements, to build them again."""
        names = [r[1] for r in self.cur.execute("PRAGMA index_list(document)").fetchall() if r[2] == 0 and r[3] == "c"]
        sqls = []
        for name in names:
            row = self.cur.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                                   (name,)).fetchone()
            if row and row[0]:
                sqls.append(row[0])
                self.cur.execute('DROP INDEX "{}"'.format(name.replace('"', '""')))
        return sqls


class Writer:
    """Batches documents into the transaction; a batch that meets ids already stored is classified row by row."""

    def __init__(self, sql: Sql, corpus_id: int, corpus: str, update_existing: bool, result: IngestResult):
        self.sql, self.corpus_id, self.corpus, self.update_existing, self.result = (
            sql, corpus_id, corpus, update_existing, result)
        # SQLite: past this many new rows, the non-unique indexes are dropped and built again at the end
        self.defer_at = max(DEFER_INDEXES_AFTER, sql.max_document_id() // 4) if sql.sqlite else None
        self.deferred: list[str] = []
        self.name, self.id_field, self.first_new = "", "", 0
        self.stamp = sql.now()  # created_at: when this ingest began, the same for all its documents

    def start_file(self, name: str, id_field: str) -> None:
        self.name, self.id_field = name, id_field
        # ids above this were inserted from this file: meeting one again is a duplicate inside the file
        self.first_new = self.sql.max_document_id()

    def write(self, docs: list[Doc], lines: list[int]) -> None:
        """One batch: ``docs`` and the line each comes from."""
        if not docs:
            return
        if self.sql.insert_or_conflict(self.corpus_id, self.stamp, docs):
            self.result.added += len(docs)
        else:
            self._classify(docs, lines)
        if self.defer_at is not None and self.result.added >= self.defer_at:
            self.deferred = self.sql.drop_plain_indexes()
            self.defer_at = None

    def finish(self) -> None:
        """Build the indexes dropped for speed (inside the transaction, like everything else).

        SQLite sorts in memory up to its page cache size: the cache is held at 1 MiB (SQLite's least sort
        buffer) while the indexes are built, so memory does not grow with the size of the ingest.
        """
        if not self.deferred:
            return
        cache = self.sql.cur.execute("PRAGMA cache_size").fetchone()[0]
        self.sql.cur.execute(f"PRAGMA cache_size={-SORT_CACHE_KIB}")
        try:
            for create in self.deferred:
                self.sql.execute(create)
        finally:
            self.sql.cur.execute(f"PRAGMA cache_size={int(cache)}")
        self.deferred = []

    def _duplicate(self, ext_id: str, line: int) -> InputError:
        return InputError(f"duplicate id {ext_id!r} in this file", file=self.name, line=line, field=self.id_field)

    def _classify(self, docs: list[Doc], lines: list[int]) -> None:
        existing = self.sql.existing(self.corpus_id, [d[0] for d in docs])
        seen: set[str] = set()
        new = []
        for line, doc in zip(lines, docs, strict=True):
            ext_id, text, meta, digest = doc
            if ext_id in seen:
                raise self._duplicate(ext_id, line)
            seen.add(ext_id)
            old = existing.get(ext_id)
            if old is None:
                new.append(doc)
            elif old[0] > self.first_new:
                raise self._duplicate(ext_id, line)
            elif old[1] == digest:
                self.result.unchanged += 1
            elif self.update_existing:
                self.sql.update(old[0], text, meta, digest)
                self.result.updated += 1
            else:
                raise InputError(f"id {ext_id!r} is already in corpus {self.corpus!r} with a different text "
                                 "(pass --update to replace it)", file=self.name, line=line, field=self.id_field)
        if new:
            self.sql.insert(self.corpus_id, self.stamp, new)
            self.result.added += len(new)


# --------------------------------------------------------------------------- opening a SQLite store without SQLAlchemy


def sqlite_path(db: str | None) -> str | None:
    """The file of ``db`` (as ``condsim_annot.db.resolve_url`` reads it) when it is a plain SQLite file path."""
    db = db or os.environ.get("CONDSIM_DB") or "condsim.db"
    if "://" not in db:
        return str(Path(db).expanduser())
    prefix = "sqlite:///"
    if db.startswith(prefix) and not any(c in db for c in "?%") and db[len(prefix):] not in ("", ":memory:"):
        return db[len(prefix):]
    return None


def open_current_sqlite(path: str) -> sqlite3.Connection | None:
    """A connection set up as ``condsim_annot.db`` sets one up, if ``path`` is a store at the current migrations."""
    heads = migration_heads()
    if not heads or not os.path.isfile(path):
        return None
    try:
        busy = max(0.0, float(os.environ.get("CONDSIM_SQLITE_BUSY_S", "60")))
    except ValueError:
        return None  # open_store says what is wrong with it
    conn = sqlite3.connect(path, timeout=busy, isolation_level=None)
    try:
        if {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} != heads:
            conn.close()
            return None
        for pragma in ("foreign_keys=ON", f"busy_timeout={int(busy * 1000)}", "journal_mode=WAL",
                       "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
    except sqlite3.Error:
        conn.close()
        return None
    return conn


_HEADS: list[frozenset[str] | None] = []


def migration_heads() -> frozenset[str] | None:
    """The head revisions of the migrations, read from their files without Alembic (None: not sure)."""
    if not _HEADS:
        _HEADS.append(_read_heads())
    return _HEADS[0]


def _read_heads() -> frozenset[str] | None:
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        for f in resources.files("condsim_annot.migrations").joinpath("versions").iterdir():
            if not f.name.endswith(".py") or f.name.startswith(("__init__", ".#")):
                continue
            values = {}
            for node in ast.parse(f.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    target, value = node.target, node.value
                else:
                    continue
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    values[target.id] = ast.literal_eval(value)
            if "down_revision" not in values:
                return None
            rev, down = values.get("revision"), values["down_revision"]
            downs = [down] if isinstance(down, str) else [] if down is None else down
            if not isinstance(rev, str) or not isinstance(downs, (list, tuple)) or \
                    not all(isinstance(d, str) for d in downs):
                return None
            revisions.add(rev)
            parents.update(downs)
    except (OSError, SyntaxError, ValueError, ModuleNotFoundError):
        return None
    return frozenset(revisions - parents) or None
