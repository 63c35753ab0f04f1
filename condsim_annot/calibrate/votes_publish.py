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

_IN_FILE = (
    # a line repeating an earlier line (same hash) adds nothing
    "UPDATE {t} SET dup = 1 WHERE line > (SELECT MIN(s2.line) FROM {t} s2 WHERE s2.external_id = {t}.external_id)",
    # an annotator voting again on a triplet later in the file: the last line counts
    "UPDATE {t} SET state = 'superseded' WHERE dup = 0 AND line < (SELECT MAX(s2.line) FROM {t} s2 WHERE s2.dup = 0"
    " AND s2.criterion_id = {t}.criterion_id AND s2.anchor_id = {t}.anchor_id AND s2.first_id = {t}.first_id"
    " AND s2.second_id = {t}.second_id AND s2.annotator = {t}.annotator)",
)

_TRIPLETS = (
    "INSERT INTO triplet (criterion_id, anchor_id, first_id, second_id, method, priority, is_attention_check,"
    " created_at) SELECT DISTINCT criterion_id, anchor_id, first_id, second_id, 'import', 0.0, false, :now"
    " FROM {t} WHERE dup = 0 ORDER BY criterion_id, anchor_id, first_id, second_id"
    " ON CONFLICT (criterion_id, anchor_id, first_id, second_id) DO NOTHING"
)
_IDS = (
    "UPDATE {t} SET triplet_id = tr.id FROM triplet tr WHERE tr.criterion_id = {t}.criterion_id"
    " AND tr.anchor_id = {t}.anchor_id AND tr.first_id = {t}.first_id AND tr.second_id = {t}.second_id"
    " AND {t}.dup = 0",
    "UPDATE {t} SET annotator_id = a.id FROM annotator a WHERE a.name = {t}.annotator AND {t}.dup = 0",
)
_PRESENT = (
    "UPDATE {t} SET dup = 2 WHERE dup = 0 AND EXISTS (SELECT 1 FROM vote v WHERE v.external_id = {t}.external_id"
    " AND v.source = 'import')"
)
_SUPERSEDE = (
    "UPDATE vote SET state = 'superseded' WHERE id IN (SELECT v.id FROM {t} s JOIN vote v"
    " ON v.triplet_id = s.triplet_id AND v.annotator_id = s.annotator_id"
    " WHERE s.dup = 0 AND s.state = 'active' AND v.source = 'import' AND v.state = 'active')"
)
_VOTES = (
    "INSERT INTO vote (triplet_id, annotator_id, choice, swapped, latency_ms, rationale, confidence, source, state,"
    " replaces_id, group_id, external_id, meta, created_at)"
    " SELECT s.triplet_id, s.annotator_id, s.choice, s.swapped, s.latency_ms, s.rationale, s.confidence, 'import',"
    " s.state, CASE WHEN s.state = 'active' THEN (SELECT MAX(v.id) FROM vote v WHERE v.triplet_id = s.triplet_id"
    " AND v.annotator_id = s.annotator_id AND v.source = 'import' AND v.state = 'superseded') END,"
    " s.group_id, s.external_id, {meta}, :now FROM {t} s WHERE s.dup = 0"
    " ORDER BY s.triplet_id, s.annotator_id, s.swapped, s.line"
    " ON CONFLICT (triplet_id, annotator_id, source, swapped) WHERE state = 'active' DO NOTHING"
)
_META = {
    "sqlite": "json_object('file', :file, 'line', s.line)",
    "postgresql": "json_build_object('file', CAST(:file AS text), 'line', s.line)",
}


def _sql(conn: Connection, template: str, **params: Any) -> Any:
    stmt = text(template.format(t="vote_import_staging", meta=_META[conn.dialect.name]))
    if "now" in params:
        stmt = stmt.bindparams(bindparam("now", type_=DateTime(timezone=True)))
    return conn.execute(stmt, params)


def mark_in_file(conn: Connection) -> None:
    """Index the staged rows and mark repeats and re-votes (temporary table only: no lock on the store)."""
    conn.exec_driver_sql("CREATE INDEX vis_ext ON vote_import_staging (external_id, line)")
    conn.exec_driver_sql("CREATE INDEX vis_key ON vote_import_staging "
                         "(criterion_id, anchor_id, first_id, second_id, annotator, line)")
    for stmt in _IN_FILE:
        _sql(conn, stmt)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE vote_import_staging")  # temporary tables are never auto-analyzed
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
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock now: no stale read snapshot to upgrade
    now = datetime.now(timezone.utc)
    steps = 7
    _annotators(conn, res.kinds)
    if progress:
        progress("publish", 1, steps)
    res.triplets_created = _sql(conn, _TRIPLETS, now=now).rowcount
    for k, stmt in enumerate((*_IDS, _PRESENT, _SUPERSEDE), start=2):
        _sql(conn, stmt)
        if progress:
            progress("publish", k, steps)
    res.added = _sql(conn, _VOTES, now=now, file=file_label).rowcount
    res.revoted_in_file = conn.execute(text(
        "SELECT COUNT(*) FROM vote_import_staging WHERE dup = 0 AND state = 'superseded'")).scalar() or 0
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
