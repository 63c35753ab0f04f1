"""The publish step of ``votes import``: staged rows become votes in one short transaction.

Set-based SQL (the same statements on SQLite and PostgreSQL, a JSON function apart),
so the transaction that other writers wait for lasts as long as a few index passes
over the file, not as long as reading and validating it.  Rows are inserted in key
order, so two imports of files sharing triplets take their locks in the same order;
a PostgreSQL deadlock or serialization failure is retried from scratch (the staged
rows are in a temporary table of this connection and survive the rollback).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from ..errors import InputError
from ..models import Annotator
from ..store_api import insert_ignoring_conflicts

Progress = Callable[[str, int, int | None], None]
RETRIES = 3
_RETRY_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure

_KEY = ("{a}.criterion_id = {b}.criterion_id AND {a}.anchor_id = {b}.anchor_id AND {a}.first_id = {b}.first_id"
        " AND {a}.second_id = {b}.second_id")
# One pass over the staged rows (temporary tables only, no lock on the store): a line repeating an earlier
# line (same hash) is dropped; an annotator voting again on a triplet later in the file: the last line counts.
_ROWS = (
    "CREATE TEMPORARY TABLE vote_import_rows AS SELECT line, criterion_id, anchor_id, first_id, second_id, annotator,"
    " choice, swapped, latency_ms, confidence, rationale, group_id, external_id, CASE WHEN line = MAX(line) OVER"
    " (PARTITION BY criterion_id, anchor_id, first_id, second_id, annotator) THEN 'active' ELSE 'superseded' END"
    " AS state, 0 AS present FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY external_id ORDER BY line) AS rn"
    " FROM vote_import_staging s) x WHERE rn = 1 ORDER BY criterion_id, anchor_id, first_id, second_id, annotator,"
    " swapped, line"
)
_DISTINCT = (
    "CREATE TEMPORARY TABLE vote_import_triplets AS SELECT DISTINCT criterion_id, anchor_id, first_id, second_id"
    " FROM vote_import_rows ORDER BY criterion_id, anchor_id, first_id, second_id"
)
_TRIPLETS = (
    "INSERT INTO triplet (criterion_id, anchor_id, first_id, second_id, method, priority, is_attention_check,"
    " created_at) SELECT criterion_id, anchor_id, first_id, second_id, 'import', 0.0, false, :now"
    " FROM vote_import_triplets WHERE true {order_triplets}"
    " ON CONFLICT (criterion_id, anchor_id, first_id, second_id) DO NOTHING"
)
_PRESENT = (  # rows imported before (same hash): unchanged, and they supersede nothing
    "UPDATE vote_import_rows SET present = 1 WHERE EXISTS (SELECT 1 FROM vote v"
    " WHERE v.external_id = vote_import_rows.external_id AND v.source = 'import')"
)
_JOINS = (
    " FROM vote_import_rows f JOIN triplet t ON " + _KEY.format(a="t", b="f")
    + " JOIN annotator a ON a.name = f.annotator"
)
_SUPERSEDE = (
    "UPDATE vote SET state = 'superseded' WHERE id IN (SELECT v.id" + _JOINS
    + " JOIN vote v ON v.triplet_id = t.id AND v.annotator_id = a.id"
    " WHERE f.present = 0 AND f.state = 'active' AND v.source = 'import' AND v.state = 'active')"
)
_VOTES = (
    "INSERT INTO vote (triplet_id, annotator_id, choice, swapped, latency_ms, rationale, confidence, source, state,"
    " replaces_id, group_id, external_id, meta, created_at)"
    " SELECT t.id, a.id, f.choice, f.swapped, f.latency_ms, f.rationale, f.confidence, 'import', f.state,"
    " CASE WHEN f.state = 'active' THEN (SELECT MAX(v.id) FROM vote v WHERE v.triplet_id = t.id"
    " AND v.annotator_id = a.id AND v.source = 'import' AND v.state = 'superseded') END,"
    " f.group_id, f.external_id, {meta}, :now" + _JOINS + " WHERE f.present = 0"
    " {order_votes}"
    " ON CONFLICT (triplet_id, annotator_id, source, swapped) WHERE state = 'active' DO NOTHING"
)
_REVOTED = "SELECT COUNT(*) FROM vote_import_rows WHERE present = 0 AND state = 'superseded'"
# The temporary tables are written in key order, which SQLite reads back as is (no sort while it holds the
# write lock); PostgreSQL is told the order, so concurrent imports take row locks alike (no deadlock).
_ORDER = {
    "sqlite": {"{order_triplets}": "", "{order_votes}": ""},
    "postgresql": {"{order_triplets}": "ORDER BY criterion_id, anchor_id, first_id, second_id",
                   "{order_votes}": "ORDER BY t.id, a.id, f.swapped, f.line"},
}
_META = {
    "sqlite": "json_object('file', :file, 'line', f.line)",
    "postgresql": "json_build_object('file', CAST(:file AS text), 'line', f.line)",
}


def _sql(conn: Connection, template: str, **params: Any) -> Any:
    dialect = conn.dialect.name
    for key, value in {"{meta}": _META[dialect], **_ORDER[dialect]}.items():
        template = template.replace(key, value)
    stmt = text(template)
    if "now" in params:
        stmt = stmt.bindparams(bindparam("now", type_=DateTime(timezone=True)))
    return conn.execute(stmt, params)


def mark_in_file(conn: Connection) -> None:
    """Drop repeated lines and mark re-votes (temporary tables only: no lock on the store)."""
    for table, build in (("vote_import_rows", _ROWS), ("vote_import_triplets", _DISTINCT)):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(build)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {table}")  # temporary tables are never auto-analyzed
    conn.commit()


def _annotators(conn: Connection, kinds: dict[str, str]) -> None:
    """Create the file's new annotators (race-safe) and check nobody created one with another kind meanwhile."""
    names = sorted(kinds)
    now = datetime.now(timezone.utc)
    conn.execute(insert_ignoring_conflicts(conn.dialect.name, Annotator, index_elements=["name"]),
                 [{"name": n, "kind": kinds[n], "created_at": now} for n in names])
    for i in range(0, len(names), 900):
        q = select(col(Annotator.name), col(Annotator.kind)).where(col(Annotator.name).in_(names[i:i + 900]))
        for name, kind in conn.execute(q):
            if kind != kinds[name]:
                raise InputError(f"annotator {name!r} was created meanwhile with kind {kind!r}, not {kinds[name]!r}",
                                 field="kind")


def _publish_once(conn: Connection, res: Any, file_label: str, progress: Progress | None) -> None:
    if conn.dialect.name == "sqlite":
        # Every id written is valid by construction (joined in this transaction, or checked when staged, and
        # documents and criteria are never deleted): the per-row foreign-key probes only lengthen the lock.
        conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock now: no stale read snapshot to upgrade
    now = datetime.now(timezone.utc)
    steps = 5
    _annotators(conn, res.kinds)
    if progress:
        progress("publish", 1, steps)
    _sql(conn, _PRESENT)
    res.triplets_created = _sql(conn, _TRIPLETS, now=now).rowcount
    if progress:
        progress("publish", 2, steps)
    _sql(conn, _SUPERSEDE)
    if progress:
        progress("publish", 3, steps)
    res.revoted_in_file = conn.execute(text(_REVOTED)).scalar() or 0
    res.added = _sql(conn, _VOTES, now=now, file=file_label).rowcount
    res.unchanged = res.read - res.added
    conn.commit()
    if progress:
        progress("publish", steps, steps)


def publish(conn: Connection, res: Any, file_label: str, progress: Progress | None = None) -> None:
    """Move the staged rows into the store in one transaction (retried on a PostgreSQL deadlock).

    Any other error propagates; the caller rolls the connection back.
    """
    mark_in_file(conn)
    for attempt in range(RETRIES):
        try:
            _publish_once(conn, res, file_label, progress)
            return
        except OperationalError as exc:
            conn.rollback()
            if getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES or attempt == RETRIES - 1:
                raise
