"""Stage 1: corpus ingest (JSONL / CSV / Parquet / stdin), streaming and transactional.

Rows are read one at a time and inserted in batches inside *one* transaction: the
first bad row raises :class:`InputError` (file, line, field) and nothing is kept.
Memory stays flat in the file size: nothing per document is remembered between
batches (duplicates are found by the database's unique index on the ids).

Both backends accept exactly the same inputs: a NUL character or a lone surrogate
in an id or a text is refused (PostgreSQL cannot store them, so SQLite does not
either); in metadata, NaN and +-Infinity (which JSON cannot hold) are stored as
null, and nesting deeper than :data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, insert, select, update
from sqlmodel import Session, col

from .db import Store
from .errors import InputError, check_string
from .models import Corpus, Document

FORMATS = ("jsonl", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
        ".pq": "parquet"}
BATCH = 2000
PROGRESS_EVERY = 500  # rows between progress callbacks
MAX_DEPTH = 64  # metadata nesting levels; deeper JSON is refused (PostgreSQL and json.dumps have limits)
EXT_ID_MAX = 500  # Document.ext_id
CORPUS_NAME_MAX = 200  # Corpus.name

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Row:
    line: int
    data: dict[str, Any]


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


def read_jsonl(fh: Iterator[bytes], name: str) -> Iterator[Row]:
    loads = json.loads
    for n, line in decoded_lines(fh, name):
        if n == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=name, line=n) from None
        except RecursionError:
            raise InputError(f"JSON nested too deeply (at most {MAX_DEPTH} levels)", file=name, line=n) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=name, line=n)
        yield Row(n, obj)


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
        yield Row(start, dict(zip(header, values, strict=True)))


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
            yield Row(n, rec)


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
    counting = _CountingReader(fh)
    rows = read_jsonl(counting, name) if fmt == "jsonl" else read_csv(counting, name)
    return rows, total, lambda: counting.pos


class _CountingReader:
    """Line iterator over a binary stream that remembers how many bytes were read."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.pos = fh, 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.fh:
            self.pos += len(line)
            yield line


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


def _doc_fields(row: Row, name: str, id_field: str, text_field: str) -> tuple[str, str, dict[str, Any]]:
    """(ext_id, text, metadata) of one row, or the InputError naming its line and field."""
    data = row.data
    raw_id = data.get(id_field)
    if raw_id is None:
        raise InputError("missing", file=name, line=row.line, field=id_field)
    ext_id = check_string(str(raw_id).strip(), name, row.line, id_field)
    if not ext_id:
        raise InputError("empty id", file=name, line=row.line, field=id_field)
    if len(ext_id) > EXT_ID_MAX:
        raise InputError(f"{len(ext_id)} characters; at most {EXT_ID_MAX} are allowed", file=name, line=row.line,
                         field=id_field)
    text = data.get(text_field)
    if text is None:
        raise InputError("missing", file=name, line=row.line, field=text_field)
    if type(text) is not str:
        raise InputError(f"expected a string, got {type(text).__name__}", file=name, line=row.line, field=text_field)
    if not text.strip():
        raise InputError("empty text", file=name, line=row.line, field=text_field)
    check_string(text, name, row.line, text_field)
    meta = {}
    for k, v in data.items():
        if k != id_field and k != text_field:
            key = str(k)
            meta[check_string(key, name, row.line, key)] = _clean_value(v, 1, name, row.line, key)
    return ext_id, text, meta


def get_or_create_corpus(session: Session, name: str, source: str | None = None) -> Corpus:
    corpus = session.scalars(select(Corpus).where(col(Corpus.name) == name)).first()
    if corpus is None:
        corpus = Corpus(name=name, source=source)
        session.add(corpus)
        session.flush()
    return corpus


_DOC_COLUMNS = "corpus_id, ext_id, text, meta, content_hash, created_at"


def _insert_documents(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert straight through the driver, in the session's transaction.

    SQLite: one ``executemany`` with the values as SQLAlchemy would store them (JSON
    text, the DateTime string); PostgreSQL: ``COPY``.  Going around SQLAlchemy's
    per-row parameter processing is what makes ingest faster than sqlite-utils.
    """
    conn = session.connection()
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        dumps = json.dumps
        stamp = rows[0][5].strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime format (UTC)
        raw.executemany(f"INSERT INTO document ({_DOC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                        [(c, e, t, dumps(m), h, stamp) for c, e, t, m, h, _ in rows])
        return
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY document ({_DOC_COLUMNS}) FROM STDIN") as copy:
            for c, e, t, m, h, now in rows:
                copy.write_row((c, e, t, json.dumps(m), h, now))
        return
    session.execute(insert(Document.__table__), [  # type: ignore[attr-defined]
        dict(zip(("corpus_id", "ext_id", "text", "meta", "content_hash", "created_at"), r, strict=True)) for r in rows])


class _FileWriter:
    """Batches one file's documents into the transaction; classifies ids already in the corpus."""

    def __init__(self, session: Session, corpus: Corpus, name: str, id_field: str, update_existing: bool,
                 result: IngestResult):
        self.s, self.corpus, self.name, self.id_field = session, corpus, name, id_field
        self.update_existing, self.result = update_existing, result
        # ids above this were inserted by this file: finding one again is a duplicate inside the file
        self.first_new = session.scalar(select(func.max(col(Document.id)))) or 0
        self.batch: list[tuple[int, str, str, dict]] = []
        self.in_batch: dict[str, int] = {}

    def add(self, line: int, ext_id: str, text: str, meta: dict) -> None:
        if ext_id in self.in_batch:
            self._duplicate(ext_id, line)
        self.in_batch[ext_id] = line
        self.batch.append((line, ext_id, text, meta))
        if len(self.batch) >= BATCH:
            self.flush()

    def _duplicate(self, ext_id: str, line: int) -> None:
        raise InputError(f"duplicate id {ext_id!r} in this file", file=self.name, line=line, field=self.id_field)

    def flush(self) -> None:
        if not self.batch:
            return
        existing = {
            ext: (doc_id, h)
            for doc_id, ext, h in self.s.execute(
                select(col(Document.id), col(Document.ext_id), col(Document.content_hash)).where(
                    col(Document.corpus_id) == self.corpus.id, col(Document.ext_id).in_(list(self.in_batch))
                )
            )
        }
        now = datetime.now(timezone.utc)
        new_rows = []
        for line, ext_id, text, meta in self.batch:
            h = content_hash(text)
            old = existing.get(ext_id)
            if old is None:
                new_rows.append((self.corpus.id, ext_id, text, meta, h, now))
            elif old[0] > self.first_new:
                self._duplicate(ext_id, line)
            elif old[1] == h:
                self.result.unchanged += 1
            elif self.update_existing:
                self.s.execute(update(Document).where(col(Document.id) == old[0])
                               .values(text=text, meta=meta, content_hash=h, updated_at=now))
                self.result.updated += 1
            else:
                raise InputError(f"id {ext_id!r} is already in corpus {self.corpus.name!r} with a different text "
                                 "(pass --update to replace it)", file=self.name, line=line, field=self.id_field)
        if new_rows:
            _insert_documents(self.s, new_rows)
            self.result.added += len(new_rows)
        self.batch.clear()
        self.in_batch.clear()


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
    check_string(corpus, None, None, "corpus")
    if len(corpus) > CORPUS_NAME_MAX:
        raise InputError(f"corpus name is {len(corpus)} characters; at most {CORPUS_NAME_MAX} are allowed",
                         field="corpus")
    result = IngestResult(corpus=corpus)
    formats = [(p, detect_format(p, fmt)) for p in paths]  # unknown types fail before any write
    with store.transaction() as s:
        corp = get_or_create_corpus(s, corpus, source=", ".join(paths))
        for path, f in formats:
            name = "<stdin>" if path == "-" else path
            result.files.append(name)
            rows, total, pos = iter_rows(path, f, stdin)
            writer = _FileWriter(s, corp, name, id_field, update_existing, result)
            n_before = result.read
            for row in rows:
                result.read += 1
                writer.add(row.line, *_doc_fields(row, name, id_field, text_field))
                if progress and result.read % PROGRESS_EVERY == 0:
                    progress(name, pos() or result.read, total)
            writer.flush()
            if result.read == n_before:
                raise InputError("empty file: no documents in it", file=name)
            if progress:
                progress(name, total or pos() or result.read, total)
    return result
