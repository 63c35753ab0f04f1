"""Small, shared write/read helpers over the store, used by every stage.

Keeping the canonical-order rule and the vote-history rule in one place means the
TUI, Argilla, the LM judge and imports cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from .errors import CondsimError
from .models import CHOICES, SOURCES, Annotator, Document, Triplet, Vote, utcnow


def canonical(anchor_id: int, x_id: int, y_id: int) -> tuple[int, int, int, bool]:
    """(anchor, first, second, swapped): first < second; swapped when x was the larger id."""
    if x_id == y_id:
        raise ValueError("the two candidates of a triplet must differ")
    if anchor_id in (x_id, y_id):
        raise ValueError("the anchor cannot be one of the candidates")
    if x_id < y_id:
        return anchor_id, x_id, y_id, False
    return anchor_id, y_id, x_id, True


def to_canonical_choice(choice: str, swapped: bool) -> str:
    """Map a choice made in *presented* terms (first = shown as A) to canonical terms."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")
    if swapped and choice in ("first", "second"):
        return "second" if choice == "first" else "first"
    return choice


def get_or_create_annotator(
    session: Session,
    name: str,
    *,
    kind: str = "human",
    model: Optional[str] = None,
    prompt_version: Optional[str] = None,
    params: Optional[dict] = None,
) -> Annotator:
    """Race-safe get-or-create (two processes may create the same annotator at once)."""
    if kind not in ("human", "llm"):
        raise CondsimError(f"annotator kind must be 'human' or 'llm', not {kind!r}")
    a = session.scalars(select(Annotator).where(Annotator.name == name)).first()
    if a is not None:
        if a.kind != kind:
            raise CondsimError(f"annotator {name!r} exists with kind {a.kind!r}, not {kind!r}")
        return a
    try:
        with session.begin_nested():
            a = Annotator(name=name, kind=kind, model=model, prompt_version=prompt_version, params=params)
            session.add(a)
    except IntegrityError:
        a = session.scalars(select(Annotator).where(Annotator.name == name)).one()
    return a


def add_triplet(
    session: Session,
    criterion_id: int,
    anchor_id: int,
    x_id: int,
    y_id: int,
    *,
    method: str = "manual",
    strategy: Optional[str] = None,
    proposal_run: Optional[int] = None,
    priority: float = 0.0,
    is_attention_check: bool = False,
    expected: Optional[str] = None,
    meta: Optional[dict] = None,
) -> tuple[Triplet, bool]:
    """Insert (or find) the canonical triplet.  Returns (triplet, created).

    ``expected`` is in the caller's (x, y) terms and is converted to canonical terms.
    """
    a, f, sec, swapped = canonical(anchor_id, x_id, y_id)
    existing = session.scalars(
        select(Triplet).where(
            Triplet.criterion_id == criterion_id, Triplet.anchor_id == a, Triplet.first_id == f, Triplet.second_id == sec
        )
    ).first()
    if existing is not None:
        return existing, False
    exp = to_canonical_choice(expected, swapped) if expected else None
    t = Triplet(
        criterion_id=criterion_id, anchor_id=a, first_id=f, second_id=sec, method=method, strategy=strategy,
        proposal_run=proposal_run, priority=priority, is_attention_check=is_attention_check, expected=exp, meta=meta,
    )
    session.add(t)
    session.flush()
    return t, True


def record_vote(
    session: Session,
    triplet_id: int,
    annotator_id: int,
    choice: str,
    *,
    source: str,
    swapped: bool = False,
    latency_ms: Optional[float] = None,
    rationale: Optional[str] = None,
    confidence: Optional[float] = None,
    group_id: Optional[str] = None,
    session_id: Optional[str] = None,
    external_id: Optional[str] = None,
    meta: Optional[dict] = None,
    supersede: bool = True,
) -> Vote:
    """Add a vote (``choice`` in canonical terms).  Never deletes anything.

    With ``supersede`` the annotator's previous active vote on this triplet (same
    source) is marked ``superseded`` and linked from the new row, keeping history.
    The caller commits; the CLI/TUI commit before acknowledging the vote.
    """
    if choice not in CHOICES:
        raise CondsimError(f"unknown choice {choice!r}; expected one of {', '.join(CHOICES)}")
    if source not in SOURCES:
        raise CondsimError(f"unknown vote source {source!r}; expected one of {', '.join(SOURCES)}")
    replaces = None
    if supersede:
        prev = session.scalars(
            select(Vote)
            .where(Vote.triplet_id == triplet_id, Vote.annotator_id == annotator_id, Vote.state == "active", Vote.source == source)
            .order_by(Vote.id.desc())
        ).all()
        for p in prev:
            p.state = "superseded"
            session.add(p)
        replaces = prev[0].id if prev else None
    v = Vote(
        triplet_id=triplet_id, annotator_id=annotator_id, choice=choice, swapped=swapped, latency_ms=latency_ms,
        rationale=rationale, confidence=confidence, source=source, group_id=group_id, session_id=session_id,
        external_id=external_id, meta=meta, replaces_id=replaces,
    )
    session.add(v)
    session.flush()
    return v


def undo_vote(session: Session, vote_id: int) -> Vote:
    """Mark a vote undone (the row stays; history is the product)."""
    v = session.get(Vote, vote_id)
    if v is None:
        raise CondsimError(f"no vote {vote_id}")
    v.state = "undone"
    session.add(v)
    if v.replaces_id:  # restore what it replaced
        prev = session.get(Vote, v.replaces_id)
        if prev is not None and prev.state == "superseded":
            prev.state = "active"
            session.add(prev)
    session.flush()
    return v


def active_votes(session: Session, criterion_id: int) -> list[Vote]:
    return list(
        session.scalars(
            select(Vote).join(Triplet, Triplet.id == Vote.triplet_id).where(Triplet.criterion_id == criterion_id, Vote.state == "active")
        ).all()
    )


def documents_by_id(session: Session, ids: Iterable[int]) -> dict[int, Document]:
    ids = list(set(ids))
    out: dict[int, Document] = {}
    for i in range(0, len(ids), 900):
        for d in session.scalars(select(Document).where(Document.id.in_(ids[i : i + 900]))).all():
            out[d.id] = d
    return out
