"""What the queue hands out: questions as shown to an annotator (documents in presented order)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, SQLModel, col, select

from ..errors import CondsimError
from ..models import Document, Triplet
from ..store_api import CHOICE_LETTER, LETTER_CHOICE

#: Presented answers (what a key press means) -> the choice in presented terms.
PRESENTED = {**LETTER_CHOICE, "first": "first", "second": "second", "skip": "skip"}
#: Canonical/presented first|second back to the letters the screen shows.
SHOWN_LETTER = {c: CHOICE_LETTER[c] for c in ("first", "second")}


@dataclass(frozen=True)
class Doc:
    id: int
    ext_id: str
    text: str


@dataclass(frozen=True)
class CriterionInfo:
    id: int
    name: str
    description: str
    version: int = 1


@dataclass
class Item:
    """One pairwise question: anchor, A and B as shown."""

    triplet_id: int
    criterion: CriterionInfo
    anchor: Doc
    a: Doc
    b: Doc
    swapped: bool  # True when the canonical second candidate is shown as A
    attention: bool = False
    expected: str | None = None  # canonical answer of an attention check
    resumed: bool = False
    previous: str | None = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    rationale: str | None = None
    shown_at: float = field(default_factory=time.monotonic)

    kind = "pairwise"


@dataclass
class GroupItem:
    """One best-of-k question: the anchor and k candidates in shown order."""

    group_id: str
    criterion: CriterionInfo
    anchor: Doc
    candidates: list[Doc]
    seeds: list[int]  # claimed triplets (with pending assignments) the grid was built from
    resumed: bool = False
    previous: str | None = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    rationale: str | None = None
    shown_at: float = field(default_factory=time.monotonic)

    kind = "best-of-k"


@dataclass(frozen=True)
class VoteInfo:
    annotator: str
    kind: str  # human | llm
    source: str
    choice: str  # in presented terms: A | B | tie | cant_tell | skip
    rationale: str | None
    confidence: float | None


@dataclass
class ReviewItem:
    """A triplet whose votes disagree, with every active vote, for adjudication."""

    triplet_id: int
    criterion: CriterionInfo
    anchor: Doc
    a: Doc
    b: Doc
    swapped: bool
    votes: list[VoteInfo]
    reason: str
    rationale: str | None = None
    resumed: bool = False
    previous: str | None = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    shown_at: float = field(default_factory=time.monotonic)

    kind = "review"


AnyItem = Item | GroupItem | ReviewItem


@dataclass
class Progress:
    done: int
    assigned: int | None  # done + still available to this annotator (None until counted)
    session_votes: int
    votes_per_min: float | None
    eta_s: float | None


def load_docs(s: Session, ids: Iterable[int]) -> dict[int, Doc]:
    """The documents a question shows (id, external id, text), by id."""
    q = select(Document.id, Document.ext_id, Document.text).where(col(Document.id).in_(list(set(ids))))
    return {i: Doc(i, e, t) for i, e, t in s.execute(q).all() if i is not None}


def pk(row: SQLModel) -> int:
    """A stored row's primary key (set once the row is flushed; the models type it Optional)."""
    value = getattr(row, "id", None)
    if value is None:
        raise CondsimError(f"{type(row).__name__} has no id yet (not flushed)")
    return int(value)


def get_triplet(s: Session, tid: int) -> Triplet:
    """The triplet ``tid`` (a queue slot or a stored answer always names an existing one)."""
    t = s.get(Triplet, tid)
    if t is None:
        raise CondsimError(f"triplet {tid} is not in the store")
    return t
