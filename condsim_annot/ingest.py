"""Stage 1: corpus ingest (JSONL / CSV / Parquet / stdin), streaming and transactional.

Rows are read one at a time and inserted in batches inside *one* transaction: the
first bad row raises :class:`InputError` (file, line, field) and nothing is kept.
Memory stays flat in the file size: nothing per document is remembered between
batches (duplicates are found by the database's unique index on the ids).

Both backends accept exactly the same inputs: a NUL character or a lone surrogate
in an id or a text is refused (PostgreSQL cannot store them, so SQLite does not
either); in metadata, NaN and +-Infinity (which JSON cannot hold) are stored as
null, and nesting deeper than :data:`MAX_DEPTH` is refused.

Speed (``bench/ingest.py``): the writes go through the database driver (sqlite3, psycopg), not
SQLAlchemy; a row is checked by a few string operations in C (:func:`_doc`), and only a row that
fails one of them takes the exact path that names the problem; each batch is inserted in one
``executemany`` (or ``COPY``) under a savepoint, and only a batch that hits the unique index is
looked up row by row (duplicates, unchanged texts, ``--update``).  On SQLite, a large ingest drops the
non-unique indexes of ``document`` and builds them again before the commit (sorting once is much
cheaper than a random B-tree insert per row); the unique index stays, and it is all one transaction.
The command (:func:`ingest_db`) opens a SQLite store that is already migrated with sqlite3 alone:
SQLAlchemy and Alembic, a second of imports, are loaded only when the store needs them.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import InputError, check_string

if TYPE_CHECKING:
    from .db import Store

FORMATS = ("jsonl", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
        ".pq": "parquet"}
BATCH = 2000
PROGRESS_EVERY = 500  # rows between progress callbacks
MAX_DEPTH = 64  # metadata nesting levels; deeper JSON is refused (PostgreSQL and json.dumps have limits)
EXT_ID_MAX = 500  # Document.ext_id
CORPUS_NAME_MAX = 200  # Corpus.name
DEFER_INDEXES_AFTER = 10_000  # SQLite: rows added before the non-unique indexes are rebuilt instead of updated
SORT_CACHE_KIB = 1000  # SQLite's page cache (and so sort buffer) while those indexes are built

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

Doc = tuple[str, str, str, str]  # ext_id, text, metadata (JSON), content hash


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


Row = tuple[int, dict[str, Any]]  # (line or record number, fields)


@dataclass
class IngestResult:
    corpus: str
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    files: list[str] = field(default_factory=list)


def detect_format(path: str, fmt: str | None = None) -> str:
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", file=path)
        return fmt
    if path == "-":
        return "jsonl"
    ext = Path(path).suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    raise InputError(
        f"unknown file type {ext or '(no extension)'!r}: expected .jsonl, .csv or .parquet (or pass --format)",
        file=path,
    )


def decoded_lines(fh: Iterator[bytes], name: str) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(fh, start=1):
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte {exc.start} of the line)", file=name, line=n) from None


_scan_json = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads less two layers
_EOL = ("\n", "\r\n")


def read_jsonl(fh: Iterable[bytes], name: str) -> Iterator[Row]:
    """One object per line; blank lines are skipped, a byte-order mark on the first line is allowed.

    A line is decoded by json's scanner directly when it holds just one value and its end of line; any
    other line (blank, a byte-order mark, spaces around the value, an error) by ``json.loads`` itself.
    """
    scan = _scan_json
    n = 0
    for raw in fh:
        n += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte {exc.start} of the line)", file=name, line=n) from None
        try:
            obj, end = scan(line, 0)
            whole = end == len(line) or line[end:] in _EOL
        except (StopIteration, ValueError, RecursionError):
            whole = False
        if not whole:
            if not line.strip():
                continue
            obj = _loads_exact(line[1:] if n == 1 and line.startswith("\ufeff") else line, name, n)
        if type(obj) is not dict:
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=name, line=n)
        yield n, obj


def _loads_exact(line: str, name: str, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=name, line=n) from None
    except RecursionError:
        raise InputError(f"JSON nested too deeply (at most {MAX_DEPTH} levels)", file=name, line=n) from None


def read_csv(fh: Iterator[bytes], name: str, delimiter: str | None = None) -> Iterator[Row]:
    """CSV rows; strict quoting, so an unterminated quote is an error at the line that opened it."""
    current = [0]

    def text_lines() -> Iterator[str]:
        for n, line in decoded_lines(fh, name):
            current[0] = n
            yield line[1:] if n == 1 and line.startswith("\ufeff") else line

    if delimiter is None:
        delimiter = "\t" if name.lower().endswith(".tsv") else ","
    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    header = next_csv_record(reader, name, current, 1)
    if header is None:
        raise InputError("empty file: expected a header row and documents", file=name)
    while True:
        start = current[0] + 1
        values = next_csv_record(reader, name, current, start)
        if values is None:
            return
        if not values:
            continue
        if len(values) != len(header):
            raise InputError(f"expected {len(header)} columns, found {len(values)}", file=name, line=start)
        yield start, dict(zip(header, values, strict=True))


def next_csv_record(reader: Any, name: str, current: list[int], start: int) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise InputError("unterminated quoted field: the quote opened on this line is never closed "
                             f"(the file ends inside it, at line {current[0]})", file=name,
                             line=start) from None
        raise InputError(f"malformed CSV: {exc}", file=name, line=current[0]) from None


def read_parquet(source: Any, name: str) -> Iterator[Row]:
    import pyarrow as pa  # heavy optional dependency: only for Parquet
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable Parquet file ({reason})", file=name) from None
    n = 0
    for batch in pf.iter_batches(batch_size=BATCH):
        for rec in batch.to_pylist():
            n += 1
            yield n, rec


def _open(path: str, name: str) -> BinaryIO:
    if os.path.isdir(path):
        raise InputError("is a folder, not a file (pass the files in it, e.g. folder/*.jsonl)", file=name)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such file", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=name) from None


def iter_rows(
    path: str, fmt: str, stdin: BinaryIO | None = None
) -> tuple[Iterator[Row], int | None, Callable[[], int]]:
    """Rows, the total size in bytes (for progress) and a function giving bytes read so far."""
    name = "<stdin>" if path == "-" else path
    if fmt == "parquet":
        if path == "-":
            import pyarrow as pa  # heavy optional dependency: only for Parquet

            return read_parquet(pa.BufferReader((stdin or sys.stdin.buffer).read()), name), None, lambda: 0
        _open(path, name).close()
        rows = read_parquet(path, name)
        return rows, None, lambda: 0
    if path == "-":
        fh: BinaryIO = stdin or sys.stdin.buffer
        total = None
    else:
        fh = _open(path, name)
        total = os.path.getsize(path)

    def pos() -> int:
        try:
            return fh.tell()
        except (OSError, ValueError):  # a pipe, or closed
            return 0

    rows = read_jsonl(fh, name) if fmt == "jsonl" else read_csv(iter(fh), name)
    return rows, total, pos


# --------------------------------------------------------------------------- one row -> one document


def _unencodable(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _json_encoder() -> Callable[[Any, int], Iterable[str]]:
    """The chunks of json.dumps(ensure_ascii=False, allow_nan=False), without building an encoder per call."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (PyPy)
        encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_unencodable)
        return lambda obj, _level: encoder.iterencode(obj)
    return make(None, _unencodable, json.encoder.encode_basestring, None, ": ", ", ", False, False, False)


_meta_chunks = _json_encoder()


def encode_meta(meta: dict[str, Any]) -> str:
    """Metadata as stored (both backends): JSON, UTF-8 left as is, NaN/Infinity refused (cleaned before)."""
    return "".join(_meta_chunks(meta, 0))


_join = "".join


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _doc(line: int, data: dict[str, Any], name: str, id_field: str, text_field: str,
         plain: bool = True) -> Doc:
    """(ext_id, text, metadata as JSON, content hash) of one row, or the InputError naming its line and field.

    ``data`` loses the id and text fields (the rest is the metadata).  ``plain``: the values are what JSON or
    CSV decode to (str keys; str, int, float, bool, None, list, dict values).  Such a row is accepted when a few
    checks in C pass: the id short, ASCII, without NUL; the text without NUL, not blank and encodable (the
    bytes that are hashed); the metadata's JSON without NaN/Infinity, without an escaped NUL, encodable, and with
    at most MAX_DEPTH brackets.  Anything else (including a row that would pass all the same) takes
    :func:`_doc_exact`, which gives the same result or the error.
    """
    raw_id = data.pop(id_field, None)
    text = data.pop(text_field, None) if text_field != id_field else raw_id
    if plain and type(text) is str and "\x00" not in text and text and not text.isspace():
        t = type(raw_id)
        ext_id = raw_id.strip() if t is str else str(raw_id) if t is int else ""
        if 0 < len(ext_id) <= EXT_ID_MAX and ext_id.isascii() and "\x00" not in ext_id:
            try:
                digest = hashlib.sha256(text.encode("utf-8")).hexdigest()  # a lone surrogate fails here
                meta = _join(_meta_chunks(data, 0))  # NaN/Infinity fail here
            except (ValueError, TypeError):
                pass
            else:
                if ("\\u0000" not in meta and meta.count("{") + meta.count("[") <= MAX_DEPTH
                        and (meta.isascii() or _utf8_ok(meta))):
                    return ext_id, text, meta, digest
    return _doc_exact(line, raw_id, text, data, name, id_field, text_field)


def _clean_value(v: Any, depth: int, name: str, line: int, fld: str) -> Any:
    """A metadata value as JSON both backends store alike (NaN/Infinity -> null)."""
    t = type(v)
    if v is None or t is int or t is bool:
        return v
    if t is str:
        return check_string(v, name, line, fld)
    if t is float:
        return v if math.isfinite(v) else None
    if depth >= MAX_DEPTH:
        raise InputError(f"metadata nested deeper than {MAX_DEPTH} levels", file=name, line=line, field=fld)
    if isinstance(v, dict):
        return {check_string(str(k), name, line, fld): _clean_value(x, depth + 1, name, line, fld)
                for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_value(x, depth + 1, name, line, fld) for x in v]
    if isinstance(v, Decimal):
        return _clean_value(float(v), depth, name, line, fld)
    if hasattr(v, "isoformat"):  # datetime, date, time (Parquet)
        return v.isoformat()
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return _clean_value(v.tolist(), depth, name, line, fld)
    if isinstance(v, (int, float, str)):  # subclasses (enums, numpy.float64) as their plain value
        base = str if isinstance(v, str) else float if isinstance(v, float) else int
        return _clean_value(base(v), depth, name, line, fld)
    raise InputError(f"a {t.__name__} value cannot be stored as JSON metadata", file=name, line=line, field=fld)


def _doc_exact(line: int, raw_id: Any, text: Any, data: dict[str, Any], name: str, id_field: str,
               text_field: str) -> Doc:
    """:func:`_doc`, value by value: each problem named, metadata cleaned (NaN -> null, dates, numpy, ...)."""
    if raw_id is None:
        raise InputError("missing", file=name, line=line, field=id_field)
    ext_id = check_string(str(raw_id).strip(), name, line, id_field)
    if not ext_id:
        raise InputError("empty id", file=name, line=line, field=id_field)
    if len(ext_id) > EXT_ID_MAX:
        raise InputError(f"{len(ext_id)} characters; at most {EXT_ID_MAX} are allowed", file=name, line=line,
                         field=id_field)
    if text is None:
        raise InputError("missing", file=name, line=line, field=text_field)
    if type(text) is not str:
        raise InputError(f"expected a string, got {type(text).__name__}", file=name, line=line, field=text_field)
    if not text.strip():
        raise InputError("empty text", file=name, line=line, field=text_field)
    check_string(text, name, line, text_field)
    meta = {}
    for k, v in data.items():
        key = str(k)
        meta[check_string(key, name, line, key)] = _clean_value(v, 1, name, line, key)
    return ext_id, text, encode_meta(meta), content_hash(text)


# --------------------------------------------------------------------------- writing (the driver's connection)


_DOC_COLUMNS = "corpus_id, ext_id, text, meta, content_hash, created_at"
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime on SQLite (UTC)


class _Sql:
    """The statements of an ingest, on a sqlite3 or psycopg connection, in one transaction."""

    def __init__(self, conn: Any, dialect: str):
        if dialect not in ("sqlite", "postgresql"):
            raise InputError(f"ingest writes to SQLite or PostgreSQL, not {dialect}")
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


class _Writer:
    """Batches documents into the transaction; a batch that meets ids already stored is classified row by row."""

    def __init__(self, sql: _Sql, corpus_id: int, corpus: str, update_existing: bool, result: IngestResult):
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


# --------------------------------------------------------------------------- entry points


def ingest(
    store: Store,
    paths: list[str],
    *,
    id_field: str = "id",
    text_field: str = "text",
    corpus: str = "default",
    fmt: str | None = None,
    update_existing: bool = False,
    progress: Callable[[str, int, int | None], Any] | None = None,
    stdin: BinaryIO | None = None,
) -> IngestResult:
    """Ingest one or more files into ``corpus`` as one transaction.

    ``progress(file, done, total)`` is called now and then (bytes for text files,
    rows for Parquet).  An empty file is an error (a wrong path or export is the usual cause).
    """
    raw = store.engine.raw_connection()
    try:
        return ingest_connection(raw.driver_connection, store.dialect, paths, id_field=id_field,
                                 text_field=text_field, corpus=corpus, fmt=fmt, update_existing=update_existing,
                                 progress=progress, stdin=stdin)
    finally:
        raw.close()


def ingest_db(db: str | None, paths: list[str], open_store: Callable[[], Store], **options: Any) -> IngestResult:
    """The command's :func:`ingest`: ``db`` as given to ``--db``; ``open_store()`` opens (creates, migrates) it.

    A SQLite file that is already at the current migrations is written through sqlite3 alone, without
    ``open_store``: SQLAlchemy and Alembic take about a second to import.  Anything else (PostgreSQL,
    a new file, a store to migrate, not a store at all) goes through ``open_store``.
    """
    path = _sqlite_path(db)
    conn = _open_current_sqlite(path) if path else None
    if conn is None:
        return ingest(open_store(), paths, **options)
    try:
        return ingest_connection(conn, "sqlite", paths, **options)
    finally:
        conn.close()


def ingest_connection(
    conn: Any,
    dialect: str,
    paths: list[str],
    *,
    id_field: str = "id",
    text_field: str = "text",
    corpus: str = "default",
    fmt: str | None = None,
    update_existing: bool = False,
    progress: Callable[[str, int, int | None], Any] | None = None,
    stdin: BinaryIO | None = None,
) -> IngestResult:
    """:func:`ingest` on a driver connection (sqlite3 or psycopg) of a migrated store; commits or rolls back."""
    check_string(corpus, None, None, "corpus")
    if len(corpus) > CORPUS_NAME_MAX:
        raise InputError(f"corpus name is {len(corpus)} characters; at most {CORPUS_NAME_MAX} are allowed",
                         field="corpus")
    result = IngestResult(corpus=corpus)
    formats = [(p, detect_format(p, fmt)) for p in paths]  # unknown types fail before any write
    sql = _Sql(conn, dialect)
    sql.begin()
    try:
        writer = _Writer(sql, sql.corpus_id(corpus, ", ".join(paths)), corpus, update_existing, result)
        for path, f in formats:
            name = "<stdin>" if path == "-" else path
            result.files.append(name)
            rows, total, pos = iter_rows(path, f, stdin)
            writer.start_file(name, id_field)
            _ingest_rows(rows, writer, name, id_field, text_field, f != "parquet",
                         _progress_of(progress, name, total, pos) if progress else None)
            if progress:
                progress(name, total or pos() or result.read, total)
        writer.finish()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


def _progress_of(progress: Callable[[str, int, int | None], Any], name: str, total: int | None,
                 pos: Callable[[], int]) -> Callable[[int], Any]:
    return lambda n: progress(name, pos() or n, total)


def _ingest_rows(rows: Iterator[Row], writer: _Writer, name: str, id_field: str, text_field: str, plain: bool,
                 progress: Callable[[int], Any] | None) -> None:
    """The loop run once per row: kept to a few calls."""
    result, doc = writer.result, _doc
    n_before = n = result.read
    docs: list[Doc] = []
    lines: list[int] = []
    for line, data in rows:
        n += 1
        docs.append(doc(line, data, name, id_field, text_field, plain))
        lines.append(line)
        if n % PROGRESS_EVERY == 0:
            if len(docs) >= BATCH:
                writer.write(docs, lines)
                docs, lines = [], []
            if progress is not None:
                result.read = n
                progress(n)
    result.read = n
    writer.write(docs, lines)
    if n == n_before:
        raise InputError("empty file: no documents in it", file=name)


# --------------------------------------------------------------------------- opening a SQLite store without SQLAlchemy


def _sqlite_path(db: str | None) -> str | None:
    """The file of ``db`` (as ``condsim_annot.db.resolve_url`` reads it) when it is a plain SQLite file path."""
    db = db or os.environ.get("CONDSIM_DB") or "condsim.db"
    if "://" not in db:
        return str(Path(db).expanduser())
    prefix = "sqlite:///"
    if db.startswith(prefix) and not any(c in db for c in "?%") and db[len(prefix):] not in ("", ":memory:"):
        return db[len(prefix):]
    return None


def _open_current_sqlite(path: str) -> sqlite3.Connection | None:
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
