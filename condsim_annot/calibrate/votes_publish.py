"""The publish step of ``votes import``: staged rows become votes, all or nothing, in short transactions.

1. *write*: the file's votes go in by chunks of :data:`CHUNK` rows, each its own short
   transaction, as ``state='undone'`` rows tagged ``session_id = import-pending:<batch>:a|s``
   (the state they will take).  Every reader counts ``active`` votes only, the queue ignores
   ``undone`` ones, and the partial unique index (migration 0007) covers active votes only,
   so nothing of the file is visible yet.  The triplets and annotators a chunk needs are
   created in the same transaction (created_at = the batch's timestamp, so they can be found),
   and so is the batch's ``importbatch`` row (migration 0010): its tag, timestamp and the lowest
   vote id it may hold, so its votes are one rowid range scan away (no index of undone votes,
   which every batch vote would enter when written and leave when activated).
2. *activate*: one transaction supersedes the annotators' older active import votes,
   flips the batch to its final states (one pass over its rowid range, no joins over the file)
   and deletes its ``importbatch`` row.  If the count flipped is not the count written, it rolls
   back: nothing is visible.
3. On any failure (or Ctrl-C) the batch is removed again: its votes, then the triplets and
   annotators it created that nothing else references, then its ``importbatch`` row.  A killed
   import (kill -9, power cut) leaves an invisible batch, which the start-up of the next import
   removes: while it runs, an import holds a lock file beside the store
   (``<store>-import-<batch>.lock``, an ``flock`` the operating system drops when the process
   dies), so a batch whose lock is free is an orphan and a running import's batch is never
   touched.  A batch without a lock file (a store in memory, a system without ``flock``) is
   removed once it is older than :data:`STALE_S`.

A TUI answer waits at most for one chunk or for the activation, never for the file.

That is SQLite's way (one writer at a time).  PostgreSQL writers only wait for a transaction
that wrote the same row, so there the file goes in as one transaction, by chunks, with its
final states (:func:`write_in_one_transaction`): all or nothing for free, and no activation
pass (an UPDATE there writes a new version of every row and every index entry).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Integer, String, bindparam, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import SQLModel, col

from ..db import sqlite_file, write_turn
from ..errors import InputError
from ..models import Annotator, load_all_models
from ..store_api import insert_ignoring_conflicts

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: a killed import's batch is removed by age only
    fcntl = None  # type: ignore[assignment]

Progress = Callable[[str, int, int | None], None]
CHUNK = 2000  # votes in the first write transaction, and at least in every other one
MAX_CHUNK = 20000  # votes in one write transaction at most
CHUNK_S = 0.1  # seconds of lock each write transaction aims at: another writer waits about that long at most
#  (every commit rewrites the index pages it touched into the WAL: 2000-row chunks wrote 1.45x the pages of 5000)
PG_CHUNK = 1_000_000  # PostgreSQL, one transaction: a statement per chunk is planned with the statistics of the
#  tables before this transaction grew them (nested loops: 50k-row chunks ran 2-3x slower than one statement)
TURN_YIELD_S = 0.002  # after each write transaction: a writer woken from its turn takes the lock first
STALE_S = 3600.0  # an unfinished batch this old belongs to a killed import
RETRIES = 3
PENDING = "import-pending:"
_RETRY_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure

_KEY = ("{a}.criterion_id = {b}.criterion_id AND {a}.anchor_id = {b}.anchor_id AND {a}.first_id = {b}.first_id"
        " AND {a}.second_id = {b}.second_id")
_ORDER = "criterion_id, anchor_id, first_id, second_id, annotator, swapped, line"
_ROWS = (  # one sort: repeated lines and re-votes were resolved while checking
    "CREATE TEMPORARY TABLE vote_import_rows AS SELECT ROW_NUMBER() OVER (ORDER BY " + _ORDER + ") AS seq, s.*"
    " FROM vote_import_staging s"
)
_STAGED = ("line, criterion_id, anchor_id, first_id, second_id, annotator, choice, swapped, latency_ms, confidence,"
           " rationale, group_id, external_id, state")
ROWS_SQLITE = (  # the importer writes the rows in _ORDER (sorted in Python): the rowid numbers them; it leaves
    #  out the columns that are NULL (or 'active') in every row
    "CREATE TEMPORARY TABLE vote_import_rows (seq INTEGER PRIMARY KEY, "
    + _STAGED.replace(", state", ", state DEFAULT 'active'") + ")"
)
_PRESENT = (  # rows imported before (same hash): unchanged, and they supersede nothing
    "DELETE FROM {t} WHERE EXISTS (SELECT 1 FROM vote v"
    " WHERE v.external_id = {t}.external_id AND v.source = 'import'"
    " AND (v.session_id IS NULL OR v.session_id NOT LIKE 'import-pending:%'))"
)
_TRIPLETS = (
    "INSERT INTO triplet (criterion_id, anchor_id, first_id, second_id, method, priority, is_attention_check,"
    " created_at) SELECT DISTINCT criterion_id, anchor_id, first_id, second_id, 'import', 0.0, false, :now"
    " FROM vote_import_rows WHERE seq >= :lo AND seq < :hi ORDER BY criterion_id, anchor_id, first_id, second_id"
    " ON CONFLICT (criterion_id, anchor_id, first_id, second_id) DO NOTHING"
)
_TRIPLETS_SQLITE = (  # the rows are in key order already (seq), and a repeated key is a conflict: no sort
    "INSERT INTO triplet (criterion_id, anchor_id, first_id, second_id, method, priority, is_attention_check,"
    " created_at) SELECT criterion_id, anchor_id, first_id, second_id, 'import', 0.0, false, :now"
    " FROM vote_import_rows WHERE seq >= :lo AND seq < :hi"
    " ON CONFLICT (criterion_id, anchor_id, first_id, second_id) DO NOTHING"
)
_VOTES = (  # replaces_id: the annotator's active import vote now, the one activation will supersede (none on a
    #  triplet this transaction created, id above :old: the look-up is skipped; by id, not created_at, so the
    #  triplet is found in its unique index alone, without a seek into the table per vote)
    "INSERT INTO vote (triplet_id, annotator_id, choice, swapped, latency_ms, rationale, confidence, source, state,"
    " replaces_id, group_id, session_id, external_id, meta, created_at)"
    " SELECT t.id, a.id, f.choice, f.swapped, f.latency_ms, f.rationale, f.confidence, 'import', 'undone',"
    " CASE WHEN f.state = 'active' AND t.id <= :old THEN (SELECT MAX(v.id) FROM vote v"
    " WHERE v.triplet_id = t.id AND v.annotator_id = a.id AND v.source = 'import' AND v.state = 'active') END,"
    " f.group_id, CASE WHEN f.state = 'active' THEN :act ELSE :sup END, f.external_id, {meta}, :now"
    " FROM vote_import_rows f JOIN triplet t ON " + _KEY.format(a="t", b="f")
    + " JOIN annotator a ON a.name = f.annotator WHERE f.seq >= :lo AND f.seq < :hi ORDER BY f.seq"
)
_JOINS = (" FROM vote_import_rows f JOIN triplet t ON " + _KEY.format(a="t", b="f")
          + " JOIN annotator a ON a.name = f.annotator WHERE f.seq >= :lo AND f.seq < :hi")
# PostgreSQL writes the file in one transaction (other writers do not wait for it), final states at once.
_SUPERSEDE_CHUNK = (
    "UPDATE vote SET state = 'superseded' WHERE id IN (SELECT v.id" + _JOINS.replace(" WHERE ", " JOIN vote v ON"
    " v.triplet_id = t.id AND v.annotator_id = a.id WHERE ") + " AND f.state = 'active' AND v.source = 'import'"
    " AND v.state = 'active')"
)
_VOTES_DIRECT = (
    "INSERT INTO vote (triplet_id, annotator_id, choice, swapped, latency_ms, rationale, confidence, source, state,"
    " replaces_id, group_id, external_id, meta, created_at)"
    " SELECT t.id, a.id, f.choice, f.swapped, f.latency_ms, f.rationale, f.confidence, 'import', f.state,"
    " CASE WHEN f.state = 'active' THEN (SELECT MAX(v.id) FROM vote v WHERE v.triplet_id = t.id"
    " AND v.annotator_id = a.id AND v.source = 'import' AND v.state = 'superseded') END,"
    " f.group_id, f.external_id, {meta}, :now" + _JOINS + " ORDER BY f.seq"
    " ON CONFLICT (triplet_id, annotator_id, source, swapped) WHERE state = 'active' DO NOTHING"
)
_BATCH = "id >= :floor AND state = 'undone' AND session_id IN (:act, :sup)"  # a rowid range scan finds a batch
_REGISTER = (  # every chunk: the batch's row, with the lowest id its votes may get (MIN: should rows at the top
    #  of the table have been deleted since the last chunk, SQLite hands their ids out again)
    "INSERT INTO importbatch (tag, first_id, created_at) VALUES (:tag, (SELECT COALESCE(MAX(id), 0) + 1 FROM vote),"
    " :now) ON CONFLICT (tag) DO UPDATE SET first_id = MIN(importbatch.first_id, excluded.first_id)"
)
_SUPERSEDE = {  # the old votes the batch replaces: as recorded when written (fast), or all of them (a race)
    "fast": "UPDATE vote SET state = 'superseded' WHERE state = 'active' AND id IN (SELECT replaces_id FROM vote"
            " WHERE id >= :floor AND state = 'undone' AND session_id = :act AND replaces_id IS NOT NULL)",
    "full": "UPDATE vote SET state = 'superseded' WHERE id IN (SELECT v.id FROM vote p JOIN vote v"
            " ON v.triplet_id = p.triplet_id AND v.annotator_id = p.annotator_id WHERE p.id >= :floor"
            " AND p.state = 'undone' AND p.session_id = :act AND v.source = 'import' AND v.state = 'active')",
}
_ACTIVATE = ("UPDATE vote SET state = CASE WHEN session_id = :act THEN 'active' ELSE 'superseded' END,"
             " session_id = NULL WHERE " + _BATCH)
_META = {
    "sqlite": "json_object('file', :file, 'line', f.line)",
    "postgresql": "json_build_object('file', CAST(:file AS text), 'line', f.line)",
}


def _sql(conn: Connection, template: str, **params: Any) -> Any:
    stmt = text(template.replace("{meta}", _META[conn.dialect.name]))
    if "now" in params:
        stmt = stmt.bindparams(bindparam("now", type_=DateTime(timezone=True)))
    return conn.execute(stmt, params)


def _begin(conn: Connection) -> None:
    """Start a write transaction: SQLite takes the lock now (no stale read snapshot to upgrade)."""
    conn.rollback()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _retrying(conn: Connection, step: Callable[[], Any], also: tuple[str, ...] = ()) -> Any:
    """Run one transaction, again on a PostgreSQL deadlock / serialization failure (or the ``also`` states)."""
    for attempt in range(RETRIES):
        try:
            with write_turn(conn.engine, then_yield_s=TURN_YIELD_S):  # SQLite: a waiting TUI answer goes next
                _begin(conn)
                result = step()
                conn.commit()
            return result
        except DBAPIError as exc:
            conn.rollback()
            if getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES + also or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def mark_in_file(conn: Connection, id_range: tuple[str, str] | None = None) -> None:
    """Drop the lines imported before; number the rest in key order (temporary tables: no lock on the store).

    Chunks are ranges of that number: neighbouring triplets are written together (B-tree locality) and
    concurrent imports take their locks in the same order.  SQLite: the importer wrote ``vote_import_rows``
    numbered already (the lines dropped here leave gaps in ``seq``); ``id_range`` (the file's lowest and
    highest external id): no vote of the store in it, no line to look up (one index probe, not one a line).
    """
    if conn.dialect.name == "sqlite":
        if id_range is None or conn.execute(text("SELECT 1 FROM vote WHERE external_id >= :lo AND external_id <= :hi"
                                                 " LIMIT 1"), {"lo": id_range[0], "hi": id_range[1]}).first():
            conn.execute(text(_PRESENT.format(t="vote_import_rows")))
    else:
        conn.execute(text(_PRESENT.format(t="vote_import_staging")))
        conn.exec_driver_sql("DROP TABLE IF EXISTS vote_import_rows")
        conn.exec_driver_sql(_ROWS)
        conn.exec_driver_sql("CREATE INDEX vote_import_rows_seq ON vote_import_rows (seq)")
        conn.exec_driver_sql("ANALYZE vote_import_rows")  # temporary tables are never auto-analyzed
    conn.commit()


def _annotators(conn: Connection, kinds: dict[str, str], now: datetime) -> None:
    """Create the file's new annotators (race-safe) and check nobody created one with another kind meanwhile."""
    names = sorted(kinds)
    conn.execute(insert_ignoring_conflicts(conn.dialect.name, Annotator, index_elements=["name"]),
                 [{"name": n, "kind": kinds[n], "created_at": now} for n in names])
    for i in range(0, len(names), 900):
        q = select(col(Annotator.name), col(Annotator.kind)).where(col(Annotator.name).in_(names[i:i + 900]))
        for name, kind in conn.execute(q):
            if kind != kinds[name]:
                raise InputError(f"annotator {name!r} was created meanwhile with kind {kind!r}, not {kinds[name]!r}",
                                 field="kind")


class Batch:
    """One import's votes on their way in: written by chunks, activated at once, or removed."""

    def __init__(self, conn: Connection, res: Any, file_label: str):
        self.conn, self.res, self.file_label = conn, res, file_label
        self.now = datetime.now(timezone.utc)
        self.tag = PENDING + uuid.uuid4().hex
        self.marks = {"act": self.tag + ":a", "sup": self.tag + ":s"}
        self.written = 0

    def _chunk(self, lo: int, hi: int, first: bool) -> tuple[int, int]:
        if first:
            _annotators(self.conn, self.res.kinds, self.now)
        _sql(self.conn, _REGISTER, tag=self.tag, now=self.now)
        old = self.conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM triplet")).scalar()  # write lock held
        triplets = _sql(self.conn, _TRIPLETS_SQLITE, now=self.now, lo=lo, hi=hi).rowcount
        votes = _sql(self.conn, _VOTES, now=self.now, lo=lo, hi=hi, old=old, file=self.file_label,
                     **self.marks).rowcount
        return int(triplets), int(votes)

    def write(self, progress: Progress | None) -> None:
        """The votes as an invisible batch, by short transactions (about CHUNK_S seconds each)."""
        conn = self.conn
        top = _counts(conn, self.res)
        if progress:
            progress("publish", 0, top)
        lo, size = 1, CHUNK
        while lo <= top:
            started = time.perf_counter()
            triplets, votes = _retrying(conn, partial(self._chunk, lo, lo + size, lo == 1))
            took = time.perf_counter() - started
            self.res.triplets_created += triplets
            self.written += votes
            lo += size
            if progress:
                progress("publish", min(lo - 1, top), top)
            # the next chunk as long as CHUNK_S of lock (at most twice or half this one): as short on a busy
            # machine, fewer commits on a quiet one
            size = max(CHUNK, min(MAX_CHUNK, int(size * min(2.0, max(0.5, CHUNK_S / max(took, 1e-3))))))

    def _activate(self, mode: str) -> int:
        floor = _floor(self.conn, self.tag)
        flipped = 0
        if floor is not None:  # else removed by another import's clean-up (it took the batch for a dead one)
            _sql(self.conn, _SUPERSEDE[mode], act=self.marks["act"], floor=floor)
            flipped = int(_sql(self.conn, _ACTIVATE, floor=floor, **self.marks).rowcount)
        if flipped != self.written:
            raise InputError(f"{self.written - flipped} of the {self.written} votes written were removed meanwhile "
                             "(by another import's clean-up?); nothing was imported: try again")
        _unregister(self.conn, self.tag)
        return flipped

    def activate(self) -> None:
        """Make the whole batch visible in one short transaction.

        The votes it replaces were recorded when written; if another import activated a vote for the same
        presentation since, the partial unique index refuses the flip and it is redone superseding by a join.
        """
        if not self.written:  # every line was imported before
            self.res.added = 0
            _retrying(self.conn, partial(_unregister, self.conn, self.tag))
        else:
            try:
                self.res.added = _retrying(self.conn, partial(self._activate, "fast"))
            except IntegrityError:
                self.conn.rollback()
                self.res.added = _retrying(self.conn, partial(self._activate, "full"), also=("23505",))
        self.res.unchanged = self.res.read - self.res.added

    def remove(self) -> None:
        """Remove this batch (a failed or interrupted import): nothing of it stays."""
        self.conn.rollback()
        floor = _floor(self.conn, self.tag)
        self.conn.rollback()
        if floor is not None:  # else no chunk was committed: nothing to remove
            remove_batch(self.conn, self.tag, self.now, floor)


def _floor(conn: Connection, tag: str) -> int | None:
    """The lowest id a batch's votes may have; None if the batch has no ``importbatch`` row (no chunk of it
    committed, or removed)."""
    first = conn.execute(text("SELECT first_id FROM importbatch WHERE tag = :tag"), {"tag": tag}).scalar()
    return None if first is None else int(first)


def _unregister(conn: Connection, tag: str) -> None:
    conn.execute(text("DELETE FROM importbatch WHERE tag = :tag"), {"tag": tag})


def _referencing(table: str) -> list[tuple[str, str]]:
    """(table, column) of every foreign key to ``table.id`` (stage tables included)."""
    load_all_models()
    return sorted((t.name, fk.parent.name) for t in SQLModel.metadata.tables.values()
                  for fk in t.foreign_keys if fk.column.table.name == table)


def _unreferenced(table: str) -> str:
    refs = " AND ".join(f'NOT EXISTS (SELECT 1 FROM "{t}" r WHERE r."{c}" = {table}.id)'
                        for t, c in _referencing(table))
    return f" AND {refs}" if refs else ""


def _delete_by_chunks(conn: Connection, table: str, where: str, **params: Any) -> None:
    """DELETE in transactions of CHUNK rows: a clean-up never holds the store long either."""
    stmt = f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} LIMIT {CHUNK})"

    def step() -> int:
        return int(_sql(conn, stmt, **params).rowcount)

    while _retrying(conn, step):
        pass


def _delete_votes(conn: Connection, tag: str, floor: int) -> None:
    """Delete a batch's votes by transactions of CHUNK votes, walking its rowid range once."""
    marks = {"act": tag + ":a", "sup": tag + ":s"}
    last = f"SELECT MAX(id) FROM (SELECT id FROM vote WHERE {_BATCH} ORDER BY id LIMIT {CHUNK}) AS b"
    lo = [floor]

    def step() -> bool:
        top = conn.execute(text(last), {"floor": lo[0], **marks}).scalar()
        if top is None:
            return False
        conn.execute(text(f"DELETE FROM vote WHERE id <= :top AND {_BATCH}"), {"floor": lo[0], "top": top, **marks})
        lo[0] = int(top) + 1
        return True

    while _retrying(conn, step):
        pass


def remove_batch(conn: Connection, tag: str, created_at: datetime, floor: int) -> None:
    """Delete a batch's votes, then the triplets and annotators it created that nothing uses, then its
    ``importbatch`` row (last: a clean-up cut short is found and done again by the next import)."""
    conn.rollback()
    _delete_votes(conn, tag, floor)
    _delete_by_chunks(conn, "triplet", "created_at = :now AND method = 'import'" + _unreferenced("triplet"),
                      now=created_at)
    _delete_by_chunks(conn, "annotator", "created_at = :now" + _unreferenced("annotator"), now=created_at)
    _retrying(conn, partial(_unregister, conn, tag))


class ImportLock:
    """The lock file a running import holds beside its SQLite store (``flock``: dropped when the process dies).

    Its name carries the batch tag, so another import can tell a running import's batch (lock held) from a
    killed one's (lock free).  None of it where the store is not a local file or ``flock`` is missing.
    """

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @staticmethod
    def prefix(conn: Connection) -> Path | None:
        """``<store>-import-`` for a SQLite store in a file, else None."""
        db = sqlite_file(conn.engine)
        return None if db is None else db.with_name(db.name + "-import-")

    @classmethod
    def take(cls, conn: Connection, tag: str) -> ImportLock | None:
        """Create and lock this import's file (before any of its batch is written); None where impossible."""
        prefix = cls.prefix(conn)
        if prefix is None:
            return None
        path = prefix.with_name(prefix.name + tag.removeprefix(PENDING) + ".lock")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError:  # a read-only folder: the batch is then removed by age only
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    def release(self, *, unlink: bool = True) -> None:
        """Remove the file, then drop the lock.  ``unlink=False``: the file stays, unlocked, naming a batch
        that the next import removes."""
        if unlink:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)

    @classmethod
    def orphans(cls, conn: Connection) -> Iterator[tuple[str, ImportLock]]:
        """(tag, lock now held by us) of each import whose process has gone, one at a time; running imports are
        left alone."""
        prefix = cls.prefix(conn)
        if prefix is None or not prefix.parent.is_dir():
            return
        for path in sorted(prefix.parent.glob(prefix.name + "*.lock")):
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:  # removed meanwhile by its import or by another clean-up
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: that import is running
                os.close(fd)
                continue
            yield PENDING + path.name[len(prefix.name):-len(".lock")], cls(path, fd)

    @classmethod
    def running(cls, conn: Connection) -> set[str]:
        """The tags of the imports whose lock file exists (running, or being cleaned up by another import)."""
        prefix = cls.prefix(conn)
        if prefix is None or not prefix.parent.is_dir():
            return set()
        return {PENDING + p.name[len(prefix.name):-len(".lock")] for p in prefix.parent.glob(prefix.name + "*.lock")}


def _pending(conn: Connection, where: str, **params: Any) -> list[tuple[str, datetime, int]]:
    """(tag, created_at, first_id) of the registered batches matching ``where``."""
    stamp = DateTime(timezone=True)
    raw = text("SELECT tag, created_at, first_id FROM importbatch WHERE " + where + " ORDER BY tag")
    if "cutoff" in params:
        raw = raw.bindparams(bindparam("cutoff", type_=stamp))
    stmt = raw.columns(tag=String, created_at=stamp, first_id=Integer)
    found = [(tag, ts, int(first)) for tag, ts, first in conn.execute(stmt, params)]
    conn.rollback()
    return found


def remove_stale_batches(conn: Connection, older_than_s: float | None = None) -> int:
    """Remove the batches of killed imports; how many.

    Those whose lock file is free go at once; those without a lock file once older than ``older_than_s``
    (default :data:`STALE_S`).  A running import's batch is never removed.
    """
    removed = 0
    for tag, lock in ImportLock.orphans(conn):
        cleaned = False
        try:
            for _, ts, first in _pending(conn, "tag = :tag", tag=tag):  # none: it died before its first commit
                remove_batch(conn, tag, ts, first)
                removed += 1
            cleaned = True
        finally:
            lock.release(unlink=cleaned)  # not cleaned: the file stays, for the next import
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=STALE_S if older_than_s is None else older_than_s)
    running = ImportLock.running(conn)
    for tag, ts, first in _pending(conn, "created_at < :cutoff", cutoff=cutoff):
        if tag not in running:
            remove_batch(conn, tag, ts, first)
            removed += 1
    return removed


def _counts(conn: Connection, res: Any) -> int:
    """The highest ``seq`` (SQLite's may have gaps: lines imported before are dropped after numbering)."""
    top, revoted = conn.execute(text(
        "SELECT COALESCE(MAX(seq), 0), COALESCE(SUM(CASE WHEN state = 'superseded' THEN 1 ELSE 0 END), 0)"
        " FROM vote_import_rows")).one()
    res.revoted_in_file = int(revoted)
    conn.commit()
    return int(top)


def write_in_one_transaction(conn: Connection, res: Any, file_label: str, progress: Progress | None) -> None:
    """PostgreSQL: the whole file in one transaction, by chunks.  MVCC: nobody waits for it but a writer of
    the very same vote, and an activation pass over the file (a new version of every row) is saved."""
    top, now = _counts(conn, res), datetime.now(timezone.utc)

    def step() -> tuple[int, int]:
        _annotators(conn, res.kinds, now)
        created = added = 0
        for lo in range(1, top + 1, PG_CHUNK):
            hi = lo + PG_CHUNK
            created += _sql(conn, _TRIPLETS, now=now, lo=lo, hi=hi).rowcount
            _sql(conn, _SUPERSEDE_CHUNK, lo=lo, hi=hi)
            added += _sql(conn, _VOTES_DIRECT, now=now, lo=lo, hi=hi, file=file_label).rowcount
            if progress:
                progress("publish", min(hi - 1, top), top)
        return created, added

    if progress:
        progress("publish", 0, top)
    res.triplets_created, res.added = _retrying(conn, step)
    res.unchanged = res.read - res.added


def publish(conn: Connection, res: Any, file_label: str, progress: Progress | None = None) -> None:
    """Move the staged rows into the store: all or nothing, without holding the store for the whole file."""
    if conn.dialect.name == "sqlite":
        # Every id written is valid by construction (joined in its transaction, or checked when staged, and
        # documents and criteria are never deleted): the per-row foreign-key probes only lengthen the lock.
        conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
    mark_in_file(conn, getattr(res, "id_range", None))
    if conn.dialect.name == "postgresql":
        write_in_one_transaction(conn, res, file_label, progress)
        return
    batch = Batch(conn, res, file_label)
    lock = ImportLock.take(conn, batch.tag)  # held until the batch is visible or removed
    done = False
    try:
        batch.write(progress)
        if progress:
            progress("activate", 0, 1)
        batch.activate()
        done = True
    finally:
        cleaned = done
        if not done:
            try:
                batch.remove()
                cleaned = True
            except DBAPIError:  # the store refuses even the clean-up: the batch stays invisible, and its
                conn.rollback()  # lock file, left unlocked, has the next import remove it
        if lock is not None:
            lock.release(unlink=cleaned)
    if progress:
        progress("activate", 1, 1)
