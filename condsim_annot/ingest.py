"""Stage 1: corpus ingest (JSONL / CSV / Parquet / stdin), streaming and transactional.

Rows are read one at a time and inserted in batches inside *one* transaction: the
first bad row raises :class:`InputError` (file, line, field) and nothing is kept.
Memory stays flat in the file size: only the ids seen in this file are remembered
(to catch duplicates), never the texts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from sqlalchemy import insert, select, update

from .db import Store
from .errors import InputError
from .models import Corpus, Document

FORMATS = ("jsonl", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
BATCH = 1000

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


def detect_format(path: str, fmt: Optional[str] = None) -> str:
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
        f"unknown file type {ext or '(no extension)'!r}: expected .jsonl, .csv or .parquet (or pass --format)", file=path
    )


def _decoded_lines(fh: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(fh, start=1):
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte {exc.start} of the line)", file=name, line=n) from None


def read_jsonl(fh: BinaryIO, name: str) -> Iterator[Row]:
    for n, line in _decoded_lines(fh, name):
        if n == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=name, line=n) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=name, line=n)
        yield Row(n, obj)


def read_csv(fh: BinaryIO, name: str, delimiter: Optional[str] = None) -> Iterator[Row]:
    lines = _decoded_lines(fh, name)
    current = {"n": 0}

    def text_lines() -> Iterator[str]:
        for n, line in lines:
            current["n"] = n
            if n == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield line

    if delimiter is None:
        delimiter = "\t" if name.lower().endswith(".tsv") else ","
    reader = csv.reader(text_lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", file=name, line=current["n"]) from None
    while True:
        start = current["n"] + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", file=name, line=current["n"]) from None
        if not values:
            continue
        if len(values) != len(header):
            raise InputError(f"expected {len(header)} columns, found {len(values)}", file=name, line=start)
        yield Row(start, dict(zip(header, values)))


def read_parquet(path: str, name: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=name) from None
    n = 0
    for batch in pf.iter_batches(batch_size=BATCH):
        for rec in batch.to_pylist():
            n += 1
            yield Row(n, rec)


def iter_rows(path: str, fmt: str, stdin: Optional[BinaryIO] = None) -> tuple[Iterator[Row], Optional[int], Callable[[], int]]:
    """Rows, the total size in bytes (for progress) and a function giving bytes read so far."""
    name = "<stdin>" if path == "-" else path
    if fmt == "parquet":
        if path == "-":
            data = (stdin or sys.stdin.buffer).read()
            import pyarrow as pa

            rows = read_parquet(pa.BufferReader(data), name)  # type: ignore[arg-type]
            return rows, None, lambda: 0
        if not os.path.exists(path):
            raise InputError("no such file", file=name)
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows if os.path.getsize(path) else 0
        return read_parquet(path, name), total, lambda: 0
    if path == "-":
        fh: BinaryIO = stdin or sys.stdin.buffer
        total = None
    else:
        if not os.path.exists(path):
            raise InputError("no such file", file=name)
        fh = open(path, "rb")
        total = os.path.getsize(path)
    counting = _CountingReader(fh)
    rows = read_jsonl(counting, name) if fmt == "jsonl" else read_csv(counting, name)
    return rows, total, lambda: counting.pos


class _CountingReader(io.RawIOBase):
    """Line iterator over a binary stream that remembers how many bytes were read."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.pos = fh, 0

    def __iter__(self):
        for line in self.fh:
            self.pos += len(line)
            yield line


def _get_field(row: Row, fieldname: str, name: str, *, required: bool = True) -> Any:
    if fieldname not in row.data or row.data[fieldname] is None:
        if required:
            raise InputError("missing", file=name, line=row.line, field=fieldname)
        return None
    return row.data[fieldname]


def _clean_meta(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (datetime,)):
            v = v.isoformat()
        elif hasattr(v, "tolist"):
            v = v.tolist()
        out[str(k)] = v
    return out


def get_or_create_corpus(session, name: str, source: Optional[str] = None) -> Corpus:
    corpus = session.scalars(select(Corpus).where(Corpus.name == name)).first()
    if corpus is None:
        corpus = Corpus(name=name, source=source)
        session.add(corpus)
        session.flush()
    return corpus


def ingest(
    store: Store,
    paths: list[str],
    *,
    id_field: str = "id",
    text_field: str = "text",
    corpus: str = "default",
    fmt: Optional[str] = None,
    update_existing: bool = False,
    progress: Optional[Callable[[str, int, Optional[int]], Any]] = None,
    stdin: Optional[BinaryIO] = None,
) -> IngestResult:
    """Ingest one or more files into ``corpus`` as one transaction.

    ``progress(file, done, total)`` is called now and then (bytes for text files,
    rows for Parquet).
    """
    result = IngestResult(corpus=corpus)
    formats = [(p, detect_format(p, fmt)) for p in paths]  # unknown types fail before any write
    with store.transaction() as s:
        corp = get_or_create_corpus(s, corpus, source=", ".join(paths))
        for path, f in formats:
            name = "<stdin>" if path == "-" else path
            result.files.append(name)
            rows, total, pos = iter_rows(path, f, stdin)
            seen: set[str] = set()
            batch: list[tuple[Row, str, str, dict]] = []

            def flush() -> None:
                if not batch:
                    return
                ids = [b[1] for b in batch]
                existing = {
                    d.ext_id: d
                    for d in s.execute(
                        select(Document.id, Document.ext_id, Document.content_hash).where(
                            Document.corpus_id == corp.id, Document.ext_id.in_(ids)
                        )
                    ).all()
                }
                new_rows = []
                now = datetime.now(timezone.utc)
                for row, ext_id, text, meta in batch:
                    h = content_hash(text)
                    old = existing.get(ext_id)
                    if old is None:
                        new_rows.append(
                            {"corpus_id": corp.id, "ext_id": ext_id, "text": text, "meta": meta, "content_hash": h, "created_at": now}
                        )
                    elif old.content_hash == h:
                        result.unchanged += 1
                    elif update_existing:
                        s.execute(
                            update(Document)
                            .where(Document.id == old.id)
                            .values(text=text, meta=meta, content_hash=h, updated_at=now)
                        )
                        result.updated += 1
                    else:
                        raise InputError(
                            f"id {ext_id!r} is already in corpus {corpus!r} with a different text "
                            "(pass --update to replace it)",
                            file=name,
                            line=row.line,
                            field=id_field,
                        )
                if new_rows:
                    s.execute(insert(Document), new_rows)
                    result.added += len(new_rows)
                batch.clear()

            for row in rows:
                result.read += 1
                raw_id = _get_field(row, id_field, name)
                ext_id = str(raw_id).strip()
                if not ext_id:
                    raise InputError("empty id", file=name, line=row.line, field=id_field)
                text = _get_field(row, text_field, name)
                if not isinstance(text, str):
                    raise InputError(f"expected a string, got {type(text).__name__}", file=name, line=row.line, field=text_field)
                if not text.strip():
                    raise InputError("empty text", file=name, line=row.line, field=text_field)
                if ext_id in seen:
                    raise InputError(f"duplicate id {ext_id!r} in this file", file=name, line=row.line, field=id_field)
                seen.add(ext_id)
                meta = _clean_meta({k: v for k, v in row.data.items() if k not in (id_field, text_field)})
                batch.append((row, ext_id, text, meta))
                if len(batch) >= BATCH:
                    flush()
                    if progress:
                        progress(name, pos() or result.read, total)
            flush()
            if progress:
                progress(name, total or pos() or result.read, total)
    return result
