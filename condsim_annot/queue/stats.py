"""Session statistics: counted in memory for the screen, written to ``annotationsession`` in the
same transaction as each vote (so the stored row never disagrees with the votes)."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from ..db import Store
from ..models import utcnow
from .tables import AnnotationSession


class SessionStats:
    """Answers, skips, undos, latencies and attention scores of one queue session."""

    def __init__(self, s: Session, *, key: str, annotator: str, annotator_id: int, mode: str,
                 criterion_id: int | None, criteria: list[str], params: dict[str, Any]):
        row = AnnotationSession(key=key, annotator_id=annotator_id, criterion_id=criterion_id, mode=mode,
                                params=params)
        s.add(row)
        s.flush()
        self.row_id = row.id
        self.key = key
        self.annotator = annotator
        self.mode = mode
        self.criteria = criteria
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.t0 = time.monotonic()
        self.votes = 0  # answers given in this session (a best-of-k answer counts once)
        self.done = 0  # triplets answered in this session (k-1 per best-of-k answer)

    def answered(self, s: Session, choice: str | None, latency_ms: float | None, *, rationale: bool = False,
                 attention: bool | None = None, comparisons: int = 0) -> None:
        """Count one answer (``attention``: None unless it was a scored attention check)."""
        T = AnnotationSession
        self.votes += 1
        self.done += max(comparisons, 1)
        self.counts[choice or "vote"] += 1
        if latency_ms is not None:
            self.latencies.append(latency_ms)
        vals: dict[str, Any] = {
            "n_votes": T.n_votes + 1, "n_comparisons": T.n_comparisons + comparisons, "last_vote_at": utcnow(),
            "total_latency_ms": T.total_latency_ms + (latency_ms or 0.0),
            "median_latency_ms": statistics.median(self.latencies) if self.latencies else None,
        }
        if choice == "skip":
            vals["n_skips"] = T.n_skips + 1
        if rationale:
            self.counts["rationale"] += 1
            vals["n_rationales"] = T.n_rationales + 1
        if attention is not None:
            self.counts["attention"] += 1
            vals["n_attention"] = T.n_attention + 1
            if attention:
                self.counts["attention_correct"] += 1
                vals["n_attention_correct"] = T.n_attention_correct + 1
        s.execute(update(T).where(col(T.id) == self.row_id).values(**vals))

    def undone(self, s: Session, comparisons: int) -> None:
        T = AnnotationSession
        self.counts["undo"] += 1
        self.votes = max(0, self.votes - 1)
        self.done = max(0, self.done - max(comparisons, 1))
        s.execute(update(T).where(col(T.id) == self.row_id).values(n_undos=T.n_undos + 1))

    def skipped_without_vote(self) -> None:
        self.counts["skip"] += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def votes_per_min(self) -> float | None:
        return self.votes / (max(self.elapsed(), 1e-6) / 60.0) if self.votes else None

    def end(self, store: Store) -> None:
        """The stored row gets its end time."""
        with store.transaction() as s:
            row = col(AnnotationSession.id) == self.row_id
            s.execute(update(AnnotationSession).where(row).values(ended_at=utcnow()))

    def summary(self, done_total: int) -> dict[str, Any]:
        elapsed = self.elapsed()
        lat = self.latencies
        c = self.counts
        return {
            "annotator": self.annotator, "mode": self.mode, "session": self.key, "criteria": self.criteria,
            "answers": self.votes, "skips": c["skip"], "undos": c["undo"], "ties": c["tie"],
            "cant_tell": c["cant_tell"], "rationales": c["rationale"],
            "attention": c["attention"], "attention_correct": c["attention_correct"],
            "duration_s": elapsed,
            "votes_per_min": (self.votes / (elapsed / 60.0)) if self.votes and elapsed > 0 else 0.0,
            "median_latency_ms": statistics.median(lat) if lat else None,
            "done_total": done_total,
        }
