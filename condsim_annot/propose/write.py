"""Writing a proposal run: the run row, then the chosen triplets in committed batches with every method's
margins, so Ctrl-C (or kill -9) leaves a consistent store and re-running resumes.

A run records its process (host, pid) and a heartbeat at every batch: a run still ``running`` whose
process is gone (same host) or whose heartbeat is older than :data:`STALE_AFTER` is marked
``interrupted (stale)`` by :func:`mark_stale_runs` (called by every ``propose``).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from ..criteria import get_criterion
from ..db import Store
from ..models import Criterion, Triplet, utcnow
from ..store_api import add_triplet, canonical, to_canonical_choice
from .context import ProposeContext
from .options import ProposeSummary
from .tables import ProposalRun, TripletMargin

WRITE_BATCH = 500
STALE_AFTER = timedelta(minutes=15)  # no heartbeat for this long: the run's process is gone
STALE = "interrupted (stale)"


def _now() -> datetime:
    return utcnow()


def _aware(t: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_stale(run: ProposalRun, now: datetime | None = None, host: str | None = None) -> bool:
    """A ``running`` run whose process is gone (same host) or whose last heartbeat is older than STALE_AFTER."""
    if run.status != "running":
        return False
    proc = (run.params or {}).get("process") or {}
    if proc.get("host") == (host or socket.gethostname()) and isinstance(proc.get("pid"), int):
        if not _process_alive(proc["pid"]):
            return True
    beat = (run.summary or {}).get("heartbeat")
    last = _aware(datetime.fromisoformat(beat)) if isinstance(beat, str) else _aware(run.created_at)
    return last is not None and (now or _now()) - last > STALE_AFTER


def mark_stale_runs(store: Store, criterion_id: int | None = None) -> list[int]:
    """Mark dead ``running`` runs ``interrupted (stale)`` (their committed triplets stand); returns their ids."""
    with store.transaction() as s:
        q = select(ProposalRun).where(col(ProposalRun.status) == "running")
        if criterion_id is not None:
            q = q.where(col(ProposalRun.criterion_id) == criterion_id)
        stale = [r for r in s.scalars(q).all() if is_stale(r)]
        for r in stale:
            r.status = STALE
            r.summary = {**(r.summary or {}), "marked_stale_at": _now().isoformat()}
            s.add(r)
        return [int(r.id) for r in stale if r.id is not None]


def proposal_runs(store: Store, criterion_name: str | None = None) -> list[ProposalRun]:
    """The proposal runs (of one criterion), oldest first; dead ``running`` runs are marked stale first."""
    mark_stale_runs(store)
    with store.session() as s:
        q = select(ProposalRun).order_by(col(ProposalRun.id))
        if criterion_name:
            q = q.where(col(ProposalRun.criterion_id) == get_criterion(s, criterion_name).id)
        return list(s.scalars(q).all())


def _run(s: Session, run_id: int) -> ProposalRun:
    run = s.get(ProposalRun, run_id)
    if run is None:  # pragma: no cover - deleted under our feet
        raise LookupError(f"proposal run {run_id} is gone")
    return run


def _row(c: dict, doc_ids: np.ndarray, crit: Criterion, method_label: str, run_id: int) -> tuple:
    """One chosen triplet in canonical terms (sides swapped where canonical order demands)."""
    a, f, sec, swapped = canonical(int(doc_ids[c["a"]]), int(doc_ids[c["x"]]), int(doc_ids[c["y"]]))
    sf, ss = (c["sy"], c["sx"]) if swapped else (c["sx"], c["sy"])
    meta = dict(c["meta"])
    if swapped:
        meta["sources"] = meta["sources"][::-1]
        meta["fused"] = -meta["fused"]
        if meta.get("model_p") is not None:
            meta["model_p"] = round(1.0 - meta["model_p"], 4)
    exp = to_canonical_choice(c["expected"], swapped) if c.get("expected") else None
    row = dict(criterion_id=crit.id, anchor_id=a, first_id=f, second_id=sec, method=method_label,
               strategy=c["strategy"], proposal_run=run_id, priority=c["priority"],
               is_attention_check=bool(c.get("is_attention_check")), expected=exp, meta=meta)
    return row, sf, ss


def _write_batch(store: Store, rows: list[tuple], run_id: int, method_names: list[str]) -> list[Triplet]:
    with store.transaction() as s:
        created: list[tuple[Triplet, list, list]] = []
        try:
            with s.begin_nested():
                objs = [Triplet(**r) for r, _sf, _ss in rows]
                s.add_all(objs)
                s.flush()
                created = [(o, sf, ss) for o, (_r, sf, ss) in zip(objs, rows, strict=False)]
        except IntegrityError:
            # someone else proposed some of these meanwhile: one at a time through the shared helper
            created = []
            for r, sf, ss in rows:
                kw = {k: v for k, v in r.items() if k not in ("criterion_id", "anchor_id", "first_id", "second_id")}
                t, new = add_triplet(s, r["criterion_id"], r["anchor_id"], r["first_id"], r["second_id"], **kw)
                if new:
                    created.append((t, sf, ss))
        margins = [{"triplet_id": t.id, "proposal_run_id": run_id, "method": m, "score_first": float(sf[k]),
                    "score_second": float(ss[k]), "margin": float(sf[k] - ss[k])}
                   for t, sf, ss in created for k, m in enumerate(method_names)]
        if margins:
            s.execute(insert(TripletMargin), margins)
        run = _run(s, run_id)
        run.n_added += len(created)
        run.summary = {**(run.summary or {}), "heartbeat": _now().isoformat()}
        s.add(run)
        return [t for t, _sf, _ss in created]


def start_run(store: Store, crit: Criterion, method_names: list[str], params: dict, budget: int) -> int:
    proc = {"host": socket.gethostname(), "pid": os.getpid()}
    with store.transaction() as s:
        run = ProposalRun(criterion_id=crit.id, criterion_version=crit.version, methods=method_names,
                          params={**params, "process": proc}, budget=budget,
                          summary={"heartbeat": _now().isoformat()})
        s.add(run)
        s.flush()
        assert run.id is not None
        return int(run.id)


def write_chosen(store: Store, crit: Criterion, chosen: list[dict], doc_ids: np.ndarray, method_names: list[str],
                 summary: ProposeSummary, ctx: ProposeContext, params: dict) -> tuple[int, dict]:
    """Write the run and its triplets; returns (added, by strategy)."""
    run_id = start_run(store, crit, method_names, params, summary.budget)
    summary.run_id = run_id
    method_label = ("ensemble:" + "+".join(method_names))[:100]
    added = 0
    by_strategy: Counter = Counter()
    cb = ctx.progress_fn("writing triplets")
    cb(0, len(chosen))
    status = "failed"  # what the run says if anything below raises (the error itself propagates)
    try:
        for b0 in range(0, len(chosen), WRITE_BATCH):
            rows = [_row(c, doc_ids, crit, method_label, run_id) for c in chosen[b0 : b0 + WRITE_BATCH]]
            created = _write_batch(store, rows, run_id, method_names)
            added += len(created)
            by_strategy.update(t.strategy for t in created)
            cb(min(b0 + WRITE_BATCH, len(chosen)), len(chosen))
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        finish_run(store, run_id, status, added, dict(by_strategy), summary if status == "done" else None)
    return added, dict(by_strategy)


def finish_run(store: Store, run_id: int, status: str, added: int, by_strategy: dict,
               summary: ProposeSummary | None = None) -> None:
    """Record how the run ended; if the store is unreachable the triplets already written stand (and a later
    ``propose`` marks the run stale)."""
    extra: dict[str, Any] = {}
    if summary is not None:
        extra = {"anchors": summary.anchors, "candidates": summary.candidates, "skipped": summary.skipped,
                 "method_info": summary.method_info, "components": summary.components}
    try:
        with store.transaction() as s:
            run = _run(s, run_id)
            run.status = status
            run.finished_at = _now()
            run.summary = {"added": added, "by_strategy": by_strategy, **extra}
            s.add(run)
    except OperationalError:  # pragma: no cover - the store went away
        pass
