"""Tables of the training stage: every trained criterion-specific similarity, versioned.

One row per ``condsim-annot train`` result: the criterion (and its version), the calibration
run whose gold labels it learnt from, the base model, the hyper-parameters, the held-out
metrics and either the adapter's weights (a small ``.npz`` blob, so a PostgreSQL store shared
by several machines carries them) or the folder of a fully fine-tuned model.  Rows are never
overwritten; the latest adapter of a criterion is the one the proposer method ``adapter`` uses.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, LargeBinary, Text
from sqlmodel import Field, SQLModel

from ..models import utcnow


class TrainedModel(SQLModel, table=True):
    """A criterion adapter (``kind`` adapter) or a fine-tuned sentence-transformers model (``kind`` full)."""

    id: int | None = Field(default=None, primary_key=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    criterion_version: int = Field(default=1)
    calibration_run_id: int | None = Field(default=None, foreign_key="calibrationrun.id")
    kind: str = Field(default="adapter", max_length=20, description="adapter | full")
    base_model: str = Field(sa_type=Text, description="the sentence-transformers model whose embeddings it maps")
    prompt: str | None = Field(default=None, sa_type=Text, description="the query-side prompt it was trained with")
    params: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    metrics: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    n_train: int = Field(default=0, description="gold triplets the stored model was fitted on")
    train_triplets: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    weights: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    path: str | None = Field(default=None, sa_type=Text, description="model folder (kind full)")
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
