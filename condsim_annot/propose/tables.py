"""Tables of the proposal stage: proposal runs and per-triplet method margins.

The embedding cache itself lives in files beside the store (see :mod:`.cache`):
a memory-mapped float32 ``.npy`` per model plus its hash->row index, so a
PostgreSQL store shared by several machines never points at a file that is not
on this one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from ..models import utcnow


class ProposalRun(SQLModel, table=True):
    """One `condsim-annot propose` invocation (also the ones that added nothing)."""

    id: int | None = Field(default=None, primary_key=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    criterion_version: int = Field(default=1)
    methods: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    params: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    budget: int = Field(default=0, description="the criterion's total asked for")
    n_added: int = Field(default=0)
    status: str = Field(default="running", max_length=20, description="running | done | interrupted | failed")
    summary: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TripletMargin(SQLModel, table=True):
    """A method's scores of a proposed triplet, in canonical terms:
    ``margin = s(anchor, first) - s(anchor, second)`` (> 0: the method prefers *first*)."""

    __table_args__ = (
        UniqueConstraint("triplet_id", "method", "proposal_run_id", name="uq_tripletmargin_triplet_method_run"),)

    id: int | None = Field(default=None, primary_key=True)
    triplet_id: int = Field(foreign_key="triplet.id", index=True)
    proposal_run_id: int | None = Field(default=None, foreign_key="proposalrun.id", index=True)
    method: str = Field(max_length=100, index=True)
    score_first: float = Field(default=0.0)
    score_second: float = Field(default=0.0)
    margin: float = Field(default=0.0)
