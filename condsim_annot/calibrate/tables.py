"""Tables of the calibration stage: per-run pair scores and per-run annotator statistics.

A calibration run (foundation table ``calibrationrun``) owns its gold labels
(``goldlabel``), the fitted score of every pair item {anchor, candidate}
(``pairscore``) and what the fit learned about each annotator (``annotatorstat``).
Runs are never overwritten: the latest run of a criterion is the current one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from ..models import utcnow


class PairScore(SQLModel, table=True):
    """s({anchor, candidate}) under a criterion, from one calibration run.

    The pair is unordered; ``anchor_id`` is the document it was asked with as anchor
    (the first such triplet).  Scores compare only inside one ``component`` of the
    comparison graph."""

    __table_args__ = (
        UniqueConstraint("calibration_run_id", "anchor_id", "candidate_id", name="uq_pairscore_run_pair"),
    )

    id: int | None = Field(default=None, primary_key=True)
    calibration_run_id: int = Field(foreign_key="calibrationrun.id", index=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    anchor_id: int = Field(foreign_key="document.id", index=True)
    candidate_id: int = Field(foreign_key="document.id")
    score: float = Field(default=0.0)
    stderr: float = Field(default=0.0)
    component: int = Field(default=0)
    n_votes: int = Field(default=0, description="fitted comparisons this pair took part in")
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class AnnotatorStat(SQLModel, table=True):
    """What one calibration run learned about one annotator."""

    __table_args__ = (UniqueConstraint("calibration_run_id", "annotator_id", name="uq_annotatorstat_run_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    calibration_run_id: int = Field(foreign_key="calibrationrun.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    beta: float = Field(default=1.0, description="discrimination: small = noisy, ~0 = not trusted")
    n_votes: int = Field(default=0, description="active votes, all choices")
    n_fitted: int = Field(default=0, description="votes that entered the fit (first/second/tie)")
    n_cant_tell: int = Field(default=0)
    n_skip: int = Field(default=0)
    attention_n: int = Field(default=0)
    attention_correct: int = Field(default=0)
    loo_agreement: float | None = Field(default=None, description="agreement with the leave-one-out consensus")
    gold_agreement: float | None = Field(default=None, description="agreement with this run's gold labels")
    position_bias: float | None = Field(default=None, description="share of decisive votes for the side shown as A")
    median_latency_ms: float | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ImportBatch(SQLModel, table=True):
    """A ``votes import`` batch written but not yet visible (SQLite; migration 0010).

    Its votes are ``undone`` rows tagged ``<tag>:a|s`` with ids >= ``first_id``: the row is written with the
    batch's first chunk and deleted with its activation or removal, so a killed import's batch is found here
    (and removed by rowid range) without an index over every vote that an activation would have to update."""

    tag: str = Field(primary_key=True, max_length=64)
    first_id: int = Field(description="no vote of the batch has a lower id")
    created_at: datetime = Field(sa_type=DateTime(timezone=True), description="the batch's timestamp")
