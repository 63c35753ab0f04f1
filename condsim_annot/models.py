"""The store's tables (SQLModel).

One module for the foundation tables.  Later pipeline stages add their own tables
in their own modules (``condsim_annot/<stage>...``) and through *new* Alembic
migrations; :func:`load_all_models` imports them so that ``SQLModel.metadata`` is
complete wherever it is compared with the migrations.

Conventions
-----------
* Triplets are stored in canonical order: ``first_id < second_id``.  A vote's
  ``choice`` is always in canonical terms (``first`` / ``second`` / ``tie`` /
  ``cant_tell`` / ``skip``); what the annotator *saw* is kept in ``swapped``
  (True when the canonical *second* candidate was shown as "A").
* Votes are never deleted: undo and edits create new rows and mark the old one
  ``undone`` / ``superseded`` (the labour of annotators is the product).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

CHOICES = ("first", "second", "tie", "cant_tell", "skip")
SOURCES = ("tui", "argilla", "llm", "import", "review")
ANNOTATOR_KINDS = ("human", "llm")
VOTE_STATES = ("active", "undone", "superseded")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(**kw: Any):
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


def _json(nullable: bool = True):
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class Corpus(SQLModel, table=True):
    """A named collection of documents; criteria are views of one corpus."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    source: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts()


class Document(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("corpus_id", "ext_id", name="uq_document_corpus_ext"),)

    id: int | None = Field(default=None, primary_key=True)
    corpus_id: int = Field(foreign_key="corpus.id", index=True)
    ext_id: str = Field(max_length=500, description="the id from the user's file")
    text: str = Field(sa_type=Text)
    meta: dict | None = _json()
    content_hash: str = Field(max_length=64, index=True, description="sha256 of the text")
    created_at: datetime = _ts()
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Criterion(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    description: str = Field(sa_type=Text)
    instruction: str | None = Field(default=None, sa_type=Text, description="embedding query instruction")
    version: int = Field(default=1)
    corpus_id: int | None = Field(default=None, foreign_key="corpus.id")
    created_at: datetime = _ts()
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Triplet(SQLModel, table=True):
    """(anchor; first, second) under a criterion, candidates in canonical order."""

    __table_args__ = (
        UniqueConstraint("criterion_id", "anchor_id", "first_id", "second_id", name="uq_triplet_canonical"),
        CheckConstraint("first_id < second_id", name="ck_triplet_canonical_order"),
        CheckConstraint("anchor_id <> first_id AND anchor_id <> second_id", name="ck_triplet_anchor_distinct"),
    )

    id: int | None = Field(default=None, primary_key=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    anchor_id: int = Field(foreign_key="document.id", index=True)
    first_id: int = Field(foreign_key="document.id")
    second_id: int = Field(foreign_key="document.id")
    method: str = Field(default="manual", max_length=100, description="how it was proposed")
    strategy: str | None = Field(default=None, max_length=100,
                                 description="disagreement | audit | attention | bridge | ...")
    proposal_run: int | None = Field(default=None)
    priority: float = Field(default=0.0, description="higher = ask first")
    is_attention_check: bool = Field(default=False)
    expected: str | None = Field(default=None, max_length=10, description="known answer of an attention check")
    meta: dict | None = _json()
    created_at: datetime = _ts()


class Annotator(SQLModel, table=True):
    __table_args__ = (CheckConstraint("kind IN ('human', 'llm')", name="ck_annotator_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=300)
    kind: str = Field(default="human", max_length=10)
    model: str | None = Field(default=None, max_length=300)
    prompt_version: str | None = Field(default=None, max_length=100)
    params: dict | None = _json()
    created_at: datetime = _ts()


class Vote(SQLModel, table=True):
    __table_args__ = (
        CheckConstraint("choice IN ('first', 'second', 'tie', 'cant_tell', 'skip')", name="ck_vote_choice"),
        CheckConstraint("state IN ('active', 'undone', 'superseded')", name="ck_vote_state"),
        Index("ix_vote_triplet_annotator", "triplet_id", "annotator_id"),  # also serves triplet_id alone
        # Migration 0009: an import writes every index of every vote, so there are few and they are partial
        # where only some votes need them (best-of-k answers).  0010: an import's batch is found through its
        # ``importbatch`` row (calibrate/tables.py), not an index of undone votes.
        Index("ix_vote_group_id", "group_id", sqlite_where=text("group_id IS NOT NULL"),
              postgresql_where=text("group_id IS NOT NULL")),
        # One active vote per (annotator, triplet, source, presentation): enforced by the database, so two
        # concurrent judge runs or imports cannot both add one (migration 0007).
        Index("uq_vote_active_presentation", "triplet_id", "annotator_id", "source", "swapped", unique=True,
              sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    triplet_id: int = Field(foreign_key="triplet.id")
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    choice: str = Field(max_length=10)
    swapped: bool = Field(default=False, description="True when the canonical second candidate was shown as A")
    latency_ms: float | None = Field(default=None)
    rationale: str | None = Field(default=None, sa_type=Text)
    confidence: float | None = Field(default=None, description="e.g. an LLM's label probability")
    source: str = Field(max_length=20)
    state: str = Field(default="active", max_length=12)
    replaces_id: int | None = Field(default=None, foreign_key="vote.id")
    group_id: str | None = Field(default=None, max_length=64,
                                 description="best-of-k answer this comparison came from")
    session_id: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=200, index=True)
    meta: dict | None = _json()
    created_at: datetime = _ts()


class Assignment(SQLModel, table=True):
    """A queue slot: this annotator has been handed this triplet."""

    __table_args__ = (UniqueConstraint("triplet_id", "annotator_id", name="uq_assignment_triplet_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    triplet_id: int = Field(foreign_key="triplet.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    state: str = Field(default="pending", max_length=12, description="pending | done | released")
    swapped: bool | None = Field(default=None)
    created_at: datetime = _ts()
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class CalibrationRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    params: dict | None = _json()
    summary: dict | None = _json()
    n_votes: int = Field(default=0)
    created_at: datetime = _ts()


class GoldLabel(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("calibration_run_id", "triplet_id", name="uq_gold_run_triplet"),)

    id: int | None = Field(default=None, primary_key=True)
    calibration_run_id: int = Field(foreign_key="calibrationrun.id", index=True)
    criterion_id: int = Field(foreign_key="criterion.id", index=True)
    triplet_id: int = Field(foreign_key="triplet.id", index=True)
    label: str | None = Field(default=None, max_length=10, description="first | second (canonical), None if undecided")
    probability: float = Field(default=0.5, description="P(label) under the fitted model")
    n_votes: int = Field(default=0)
    status: str = Field(default="uncertain", max_length=12, description="gold | uncertain | contested | derived")
    created_at: datetime = _ts()


# Stage modules that define further tables.  Each later stage appends its module
# here *and* ships a migration; ``tests/test_migrations.py`` checks they agree.
MODEL_MODULES: list[str] = [
    "condsim_annot.models",
]


def load_all_models() -> type[SQLModel]:
    """Import every module that defines tables, so ``SQLModel.metadata`` is complete."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
    # Stage table modules are discovered by name: any ``condsim_annot/<stage>/tables.py``
    # (plus the namespaced tui/ and exporters/ folders).  Keep stage __init__ files light.
    package = importlib.import_module("condsim_annot")
    names = [info.name + ".tables" for info in pkgutil.iter_modules(package.__path__, "condsim_annot.") if info.ispkg]
    names += ["condsim_annot.tui.tables", "condsim_annot.exporters.tables"]
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is not installed (e.g. tui/ without its extras)
            found = False
        if found:
            importlib.import_module(name)
    return SQLModel
