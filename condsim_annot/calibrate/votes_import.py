"""``condsim-annot votes import FILE.csv``: votes made elsewhere, as source ``import``.

Columns (header row, any order): ``criterion, anchor, a, b, annotator, choice`` and
optionally ``kind`` (human | llm), ``latency_ms``, ``confidence``, ``rationale``,
``group_id``.  ``anchor``/``a``/``b`` are document ids from the ingested files
(``ext_id``); ``choice`` is ``a | b | tie | cant_tell | skip`` in the order the
annotator saw them (``a`` shown first).  Importing the same file twice adds nothing
(each row has a content hash); when one annotator votes twice on a triplet in the
file, the last line counts and the earlier ones are kept as ``superseded`` (and counted).

All or nothing, without starving other writers:

1. *validate* the whole file (reads only): the first bad row raises ``file:line: field``;
2. *stage* the rows in a temporary table of this connection (SQLite keeps temporary
   tables in a separate file, so this takes no lock on the store); on SQLite the rows are
   kept in memory until the whole file is checked, sorted in Python and written once,
   already in the order the votes are written in (PostgreSQL: staged by ``COPY`` per chunk,
   numbered by one sort in SQL);
3. *publish* (:mod:`.votes_publish`): the votes go in as an invisible batch by short
   transactions of a few thousand rows, then one short transaction makes the batch
   visible; a failed, interrupted or killed import leaves nothing visible and its batch
   is removed (a killed import's by the start-up of the next import, even one whose file
   turns out bad).  An annotator in the TUI waits at most for one of these short steps
   (each write transaction aims at ``votes_publish.CHUNK_S`` seconds).
   (PostgreSQL, where writers do not wait for each other's rows: one transaction.)
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy import text as sql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from ..db import Store, StoreError
from ..errors import InputError
from .votes_publish import ROWS_SQLITE, publish, remove_stale_batches
from .votes_validate import Validator, read_csv

CHUNK = 20000  # rows validated and staged at a time
BLOCK_BYTES = 1 << 20  # bytes of the file read and decoded at a time
SQLITE_CACHE_KIB = 65536  # page cache of the importing connection (SQLite's default is 2 MiB)
SQLITE_CHECKPOINT_PAGES = 5000  # WAL pages between two checkpoints by the importer (default 1000: one per chunk,
#  each rewriting and fsyncing the same index pages; 9.4 -> 5.7 s of publish at 200k rows). The WAL stays bounded.
Progress = Callable[[str, int, int | None], None]  # (phase, done, total)

STAGING = Table(
    "vote_import_staging", MetaData(),
    Column("line", Integer, primary_key=True, autoincrement=False),  # SQLite: the rowid, chunks are ranges
    Column("criterion_id", Integer, nullable=False),
    Column("anchor_id", Integer, nullable=False),
    Column("first_id", Integer, nullable=False),
    Column("second_id", Integer, nullable=False),
    Column("annotator", String(300), nullable=False),
    Column("choice", String(10), nullable=False),
    Column("swapped", Boolean, nullable=False),
    Column("latency_ms", Float),
    Column("confidence", Float),
    Column("rationale", Text),
    Column("group_id", String(64)),
    Column("external_id", String(200), nullable=False),
    Column("state", String(12), nullable=False),  # active, or superseded by a later line of the file
    prefixes=["TEMPORARY"],
)
STAGED = [c.name for c in STAGING.columns]  # the columns Validator fills, in order
_IF_IN_FILE = ("latency_ms", "confidence", "rationale", "group_id")  # staged columns that are NULL in every row
#  of a file without that column (SQLite writes them only if the file has it)
_EXTERNAL_ID = itemgetter(STAGED.index("external_id"))
_ANNOTATOR = itemgetter(STAGED.index("annotator"))


@dataclass
class ImportResult:
    read: int = 0
    added: int = 0
    unchanged: int = 0
    triplets_created: int = 0
    revoted_in_file: int = 0
    annotators: set = field(default_factory=set)
    criteria: set = field(default_factory=set)
    kinds: dict = field(default_factory=dict, repr=False)  # annotator -> kind, for the publish step
    id_range: tuple[str, str] | None = field(default=None, repr=False)  # SQLite: the file's lowest, highest
    #  external id (publish looks for lines imported before only if the store has an imported vote in between)

    @property
    def warnings(self) -> list[str]:
        if not self.revoted_in_file:
            return []
        return [f"{self.revoted_in_file} row(s) are an annotator voting again on a triplet voted earlier in this "
                "file: the last line counts, the earlier ones are kept as superseded"]

    def as_dict(self) -> dict:
        return {"read": self.read, "added": self.added, "unchanged": self.unchanged,
                "triplets_created": self.triplets_created, "revoted_in_file": self.revoted_in_file,
                "annotators": sorted(self.annotators), "criteria": sorted(self.criteria), "warnings": self.warnings}


def _open_blocks(path: str, text: str | None) -> tuple[Iterator[list[bytes]], int | None, Callable[[], int]]:
    """The file's byte lines (or ``text``'s), about a MiB of them at a time; its size; a bytes-read counter."""
    if text is None:
        p = Path(path)
        if p.is_dir():
            raise InputError("is a folder, not a file", file=path)
        if not p.exists():
            raise InputError("no such file", file=path)
        fh: BinaryIO = open(p, "rb")
        total = p.stat().st_size
    else:
        data = text.encode("utf-8", "surrogatepass")
        fh, total = io.BytesIO(data), len(data)
    pos = [0]

    def blocks() -> Iterator[list[bytes]]:
        with fh:
            while block := fh.readlines(BLOCK_BYTES):
                pos[0] += sum(map(len, block))
                yield block

    return blocks(), total, lambda: pos[0]


def _write_staged(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Bulk-write staged rows through the driver (SQLite ``executemany``, PostgreSQL ``COPY``)."""
    raw: Any = conn.connection.driver_connection
    cols = ", ".join(STAGED)
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY vote_import_staging ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
    elif conn.dialect.name == "sqlite":
        raw.executemany(f"INSERT INTO vote_import_staging ({cols}) VALUES ({', '.join('?' * len(STAGED))})", rows)
    else:
        conn.execute(STAGING.insert(), [dict(zip(STAGED, r, strict=True)) for r in rows])


def _sorted_order(rows: list[tuple[Any, ...]]) -> list[int]:
    """The rows' indices in ``votes_publish._ORDER`` (criterion, anchor, first, second, annotator, swapped, line).

    One ``np.lexsort`` over integer columns (annotators as their rank: Python orders str by code point, as SQLite's
    BINARY collation orders UTF-8) instead of ``list.sort`` with a 7-tuple key per row: 0.8-1.0 -> 0.3-0.45 s
    at 200k rows on a loaded box, and no 200k key tuples alive at once."""
    n = len(rows)
    names = sorted(set(map(_ANNOTATOR, rows)))
    rank = {name: i for i, name in enumerate(names)}
    line, crit, anchor, first, second, swapped = (np.fromiter(map(itemgetter(k), rows), dtype=np.int64, count=n)
                                                  for k in (0, 1, 2, 3, 4, 7))
    ann = np.fromiter(map(rank.__getitem__, map(_ANNOTATOR, rows)), dtype=np.int64, count=n)
    order: list[int] = np.lexsort((line, swapped, ann, second, first, anchor, crit)).tolist()  # last key first
    return order


def _write_sorted(conn: Connection, rows: list[tuple[Any, ...]], superseded: list[int], header: list[str]) -> None:
    """SQLite: the checked rows, sorted in Python, written once into ``vote_import_rows`` (the rowid ``seq``
    numbers them in that order): no second copy of the file in SQL and no sort there.

    Only the columns that can hold something are written (the file's optional columns; ``state`` if a line is
    superseded): each value bound costs about 0.5 us a row, 0.1 s a column at 200k rows; the others default."""
    if superseded:
        sup, i_state = set(superseded), STAGED.index("state")
        rows = [r[:i_state] + ("superseded",) if r[0] in sup else r for r in rows]
    ordered = map(rows.__getitem__, _sorted_order(rows))
    cols = [c for c in STAGED if (c in header if c in _IF_IN_FILE else c != "state" or superseded)]
    raw: Any = conn.connection.driver_connection
    conn.exec_driver_sql("DROP TABLE IF EXISTS vote_import_rows")
    conn.exec_driver_sql(ROWS_SQLITE)
    raw.executemany(f"INSERT INTO vote_import_rows ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    ordered if cols == STAGED else map(itemgetter(*(STAGED.index(c) for c in cols)), ordered))
    raw.commit()  # the temporary table only: no lock on the store


def _stage(conn: Connection, path: str, text: str | None, res: ImportResult, progress: Progress | None) -> None:
    """Validate every row and stage it (temporary table: no lock on the store); raises on the first bad row."""
    blocks, total, pos = _open_blocks(path, text)
    header, rows = read_csv(blocks, path)
    v = Validator(conn, path, header)
    in_memory = conn.dialect.name == "sqlite"
    kept: list[tuple[Any, ...]] = []  # SQLite: every checked row, written once the file is checked

    def flush(buf: list[tuple[int, list[str]]]) -> None:
        staged = v.chunk(buf)
        if in_memory:
            kept.extend(staged)
        else:
            _write_staged(conn, staged)
            conn.commit()  # the temporary table only: no lock on the store
            conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]  # written through the driver
        res.read += len(buf)
        buf.clear()  # freed before the next chunk is read, not after
        if progress:
            progress("validate", pos(), total)

    for buf in iter(lambda: list(islice(rows, CHUNK)), []):  # CHUNK rows at a time, no Python loop per row
        flush(buf)
    if in_memory:
        conn.commit()
        if kept:
            res.id_range = (min(map(_EXTERNAL_ID, kept)), max(map(_EXTERNAL_ID, kept)))
        _write_sorted(conn, kept, v.superseded, header)
        kept.clear()
    else:
        superseded = [{"line": line} for line in v.superseded]
        for i in range(0, len(superseded), CHUNK):
            conn.execute(sql("UPDATE vote_import_staging SET state = 'superseded' WHERE line = :line"),
                         superseded[i:i + CHUNK])
        conn.commit()
    res.criteria = set(v.criteria)
    res.annotators = set(v.kinds)
    res.kinds = dict(v.kinds)
    if progress:
        progress("validate", total or 0, total)


def _stage_without_gc(conn: Connection, path: str, text: str | None, res: ImportResult,
                      progress: Progress | None) -> None:
    """:func:`_stage` with the cyclic garbage collector paused: the check allocates a few objects per row and
    keeps most of them (rows, hashes), so each collection walked every row kept so far, for nothing (no
    cycles are made): 5.5-6.5 -> 4.4-5.1 s of check at 200k rows.  Back on, as it was, however it ends."""
    was = gc.isenabled()
    if was:
        gc.disable()
    try:
        _stage(conn, path, text, res, progress)
    finally:
        if was:
            gc.enable()


def import_votes(store: Store, path: str | Path, *, text: str | None = None,
                 progress: Progress | None = None) -> ImportResult:
    """Import a votes CSV, all or nothing.  ``text`` overrides reading ``path``.

    ``progress(phase, done, total)``: phase ``validate`` (bytes of the file), ``publish``
    (rows written, between two transactions) then ``activate`` (0 then 1).
    """
    path = str(path)
    res = ImportResult()
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":  # the publish step walks the vote indexes: keep them in memory
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            conn.exec_driver_sql(f"PRAGMA temp.cache_size = -{SQLITE_CACHE_KIB}")
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
        try:
            remove_stale_batches(conn)  # what killed imports left, before anything of this file is written
        except OperationalError:
            conn.rollback()  # the store is busy: tried again by the next import
        if conn.dialect.name != "sqlite":  # SQLite: the rows wait in memory, see _stage
            STAGING.create(conn)
        conn.commit()
        try:
            _stage_without_gc(conn, path, text, res, progress)
            if not res.read:
                raise InputError("no votes: the file has a header but no rows", file=path, line=2)
            publish(conn, res, Path(path).name, progress)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreError(f"{path}: nothing was imported: the store refused the write ({reason}); "
                             "try again") from None
        finally:
            conn.rollback()
            STAGING.drop(conn, checkfirst=True)
            conn.exec_driver_sql("DROP TABLE IF EXISTS vote_import_rows")
            conn.commit()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
                conn.exec_driver_sql("PRAGMA cache_size = -2000")  # the pooled connection goes back as it came
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 1000")
    return res

