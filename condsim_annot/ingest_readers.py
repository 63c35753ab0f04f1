"""Ingest, reading: JSONL, CSV and Parquet rows as ``(line, fields)``, each problem named by file and line."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InputError

FORMATS = ("jsonl", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
        ".pq": "parquet"}
MAX_DEPTH = 64  # metadata nesting levels; deeper JSON is refused (PostgreSQL and json.dumps have limits)
PARQUET_BATCH = 2000  # records decoded at a time

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

Row = tuple[int, dict[str, Any]]  # (line or record number, fields)


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
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
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
