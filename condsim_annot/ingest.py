"""Stage 1: corpus ingest (JSONL / CSV / Parquet / stdin), streaming and transactional.

Rows are read one at a time and inserted in batches inside *one* transaction: the
first bad row raises :class:`InputError` (file, line, field) and nothing is kept.
Memory stays flat in the file size: nothing per document is remembered between
batches (duplicates are found by the database's unique index on the ids).

Both backends accept exactly the same inputs: a NUL character or a lone surrogate
in an id or a text is refused (PostgreSQL cannot store them, so SQLite does not
either); in metadata, NaN and +-Infinity (which JSON cannot hold) are stored as
null, and nesting deeper than :data:`MAX_DEPTH` is refused.

Speed (``bench/ingest.py``): a row is checked by a few string operations in C (:func:`_doc`), and only
a row that fails one of them takes the exact path that names the problem (:func:`_doc_exact`); JSON lines
are read by json's scanner directly (:mod:`.ingest_readers`); batches are written through the database
driver, not SQLAlchemy (:mod:`.ingest_writer`).  The command (:func:`ingest_db`) opens a SQLite store that
is already migrated with sqlite3 alone: SQLAlchemy and Alembic, a second of imports, are loaded only when
the store needs them (PostgreSQL, a new file, a migration to apply).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import InputError, check_string
from .ingest_readers import FORMATS as FORMATS
from .ingest_readers import MAX_DEPTH, Row, iter_rows
from .ingest_readers import decoded_lines as decoded_lines
from .ingest_readers import detect_format as detect_format
from .ingest_readers import next_csv_record as next_csv_record
from .ingest_readers import read_jsonl as read_jsonl
from .ingest_writer import Doc, IngestResult, Sql, Writer, open_current_sqlite, sqlite_path
from .ingest_writer import migration_heads as migration_heads

if TYPE_CHECKING:
    from .db import Store

BATCH = 2000  # documents per insert
PROGRESS_EVERY = 500  # rows between progress callbacks
EXT_ID_MAX = 500  # Document.ext_id
CORPUS_NAME_MAX = 200  # Corpus.name


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    path = sqlite_path(db)
    conn = open_current_sqlite(path) if path else None
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
    sql = Sql(conn, dialect)
    sql.begin()
    committed = False
    try:
        writer = Writer(sql, sql.corpus_id(corpus, ", ".join(paths)), corpus, update_existing, result)
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
        committed = True
    finally:
        if not committed:  # an error or an interrupt: nothing of this ingest stays
            conn.rollback()
    return result


def _progress_of(progress: Callable[[str, int, int | None], Any], name: str, total: int | None,
                 pos: Callable[[], int]) -> Callable[[int], Any]:
    return lambda n: progress(name, pos() or n, total)


def _ingest_rows(rows: Iterator[Row], writer: Writer, name: str, id_field: str, text_field: str, plain: bool,
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
        if n % PROGRESS_EVERY == 0:  # batches of BATCH to BATCH + PROGRESS_EVERY - 1 documents
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
