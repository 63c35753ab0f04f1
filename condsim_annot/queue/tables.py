"""Tables of the annotation queue: one row per annotation session (stats kept current vote by vote).

They live with the queue (the TUI's engine), so ``tui`` imports the queue and never the reverse;
migration ``0004_tui`` creates them.  Also declares the queue index on the foundation ``triplet``
table: the claim query walks ``(criterion_id, is_attention_check, priority, id)`` in order and stops after a
few rows, so the next triplet is found in milliseconds with 100k triplets queued.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel

from ..models import utcnow


class AnnotationSession(SQLModel, table=True):
    """One run of ``condsim-annot tui``: who, what, when, and how fast (updated with every vote)."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, index=True, unique=True, description="Vote.session_id of this session's votes")
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    criterion_id: int | None = Field(default=None, foreign_key="criterion.id")
    mode: str = Field(default="pairwise", max_length=20, description="pairwise | best-of-k | review")
    started_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_vote_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    n_votes: int = Field(default=0, description="answers given (a best-of-k answer counts once)")
    n_comparisons: int = Field(default=0, description="vote rows written (k-1 per best-of-k answer)")
    n_skips: int = Field(default=0)
    n_undos: int = Field(default=0)
    n_rationales: int = Field(default=0)
    n_attention: int = Field(default=0)
    n_attention_correct: int = Field(default=0)
    total_latency_ms: float = Field(default=0.0)
    median_latency_ms: float | None = Field(default=None)
    params: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))


# The queue's walk order over the foundation triplet table (migration 0004_tui creates it).
_triplet = SQLModel.metadata.tables["triplet"]
Index("ix_triplet_queue", _triplet.c.criterion_id, _triplet.c.is_attention_check, _triplet.c.priority, _triplet.c.id)
