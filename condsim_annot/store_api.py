"""Small, shared write/read helpers over the store, used by every stage.

Keeping the canonical-order rule and the vote-history rule in one place means the
TUI, Argilla, the LM judge and imports cannot disagree about them.  Every
get-or-create here is safe under concurrency on both backends: it inserts with
``ON CONFLICT DO NOTHING`` and then reads, so two processes creating the same
annotator or triplet at once both get the one row (no savepoint, which on SQLite
would commit early when it opens the transaction).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col

from .errors import CondsimError, InputError, check_string
from .models import CHOICES, SOURCES, Annotator, Document, Triplet, Vote, utcnow

TRIPLET_KEY = ("criterion_id", "anchor_id", "first_id", "second_id")
ACTIVE_VOTE_KEY = ("triplet_id", "annotator_id", "source", "swapped")


class ActiveVoteExists(CondsimError):
    """This annotator already has an active vote on this presentation (a concurrent writer won)."""


def canonical(anchor_id: int, x_id: int, y_id: int) -> tuple[int, int, int, bool]:
    """(anchor, first, second, swapped): first < second; swapped when x was the larger id."""
    if x_id == y_id:
        raise ValueError("the two candidates of a triplet must differ")
    if anchor_id in (x_id, y_id):
        raise ValueError("the anchor cannot be one of the candidates")
    if x_id < y_id:
        return anchor_id, x_id, y_id, False
    return anchor_id, y_id, x_id, True


#: The letters a voter sees -> the choice in presented terms (A is whatever was shown first); one map for every
#: front end (TUI, Argilla, LM judge).
LETTER_CHOICE = {"A": "first", "B": "second", "tie": "tie", "cant_tell": "cant_tell"}
#: Presented choice -> the letter shown.
CHOICE_LETTER = {v: k for k, v in LETTER_CHOICE.items()}


def to_canonical_choice(choice: str, swapped: bool) -> str:
    """Map a choice made in *presented* terms (first = shown as A) to canonical terms."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")
    if swapped and choice in ("first", "second"):
        return "second" if choice == "first" else "first"
    return choice


def max_length(column: Any) -> int | None:
    """The declared length of a string column (``Annotator.name`` -> 300)."""
    return getattr(column.type, "length", None)


def check_length(value: str | None, column: Any, field: str) -> None:
    """Refuse a too-long string with the same message on SQLite (which would store it) and PostgreSQL."""
    limit = max_length(column)
    if value is not None and limit is not None and len(value) > limit:
        raise InputError(f"{len(value)} characters; at most {limit} are allowed", field=field)


def insert_ignoring_conflicts(dialect: str, model: Any, **index: Any) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the backend named ``dialect`` (SQLite and PostgreSQL)."""
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(**index)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(**index)
    raise CondsimError(f"unsupported database backend {dialect!r}: use SQLite or PostgreSQL")


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def get_or_create_annotator(
    session: Session,
    name: str,
    *,
    kind: str = "human",
    model: str | None = None,
    prompt_version: str | None = None,
    params: dict | None = None,
) -> Annotator:
    """Race-safe get-or-create (two processes may create the same annotator at once)."""
    if kind not in ("human", "llm"):
        raise CondsimError(f"annotator kind must be 'human' or 'llm', not {kind!r}")
    check_string(name, None, None, "annotator")
    check_length(name, col(Annotator.name), "annotator")
    a = session.scalars(select(Annotator).where(col(Annotator.name) == name)).first()
    if a is None:
        check_length(model, col(Annotator.model), "model")
        check_length(prompt_version, col(Annotator.prompt_version), "prompt_version")
        session.execute(
            insert_ignoring_conflicts(_dialect(session), Annotator, index_elements=["name"]).values(
                name=name, kind=kind, model=model, prompt_version=prompt_version, params=params, created_at=utcnow()
            )
        )
        a = session.scalars(select(Annotator).where(col(Annotator.name) == name)).one()
    if a.kind != kind:
        raise CondsimError(f"annotator {name!r} exists with kind {a.kind!r}, not {kind!r}")
    return a


def _find_triplet(session: Session, criterion_id: int, a: int, f: int, sec: int) -> Triplet | None:
    return session.scalars(
        select(Triplet).where(
            col(Triplet.criterion_id) == criterion_id, col(Triplet.anchor_id) == a, col(Triplet.first_id) == f,
            col(Triplet.second_id) == sec,
        )
    ).first()


def add_triplet(
    session: Session,
    criterion_id: int,
    anchor_id: int,
    x_id: int,
    y_id: int,
    *,
    method: str = "manual",
    strategy: str | None = None,
    proposal_run: int | None = None,
    priority: float = 0.0,
    is_attention_check: bool = False,
    expected: str | None = None,
    meta: dict | None = None,
) -> tuple[Triplet, bool]:
    """Insert (or find) the canonical triplet.  Returns (triplet, created).

    Safe when another process inserts the same triplet at the same moment (the
    loser reads the winner's row).  ``expected`` is in the caller's (x, y) terms
    and is converted to canonical terms.
    """
    a, f, sec, swapped = canonical(anchor_id, x_id, y_id)
    existing = _find_triplet(session, criterion_id, a, f, sec)
    if existing is not None:
        return existing, False
    exp = to_canonical_choice(expected, swapped) if expected else None
    res = session.execute(
        insert_ignoring_conflicts(_dialect(session), Triplet, index_elements=list(TRIPLET_KEY)).values(
            criterion_id=criterion_id, anchor_id=a, first_id=f, second_id=sec, method=method, strategy=strategy,
            proposal_run=proposal_run, priority=priority, is_attention_check=is_attention_check, expected=exp,
            meta=meta, created_at=utcnow(),
        )
    )
    t = _find_triplet(session, criterion_id, a, f, sec)
    if t is None:  # pragma: no cover - the row was inserted or already there
        raise CondsimError(f"triplet ({a}; {f}, {sec}) could not be created")
    return t, bool(getattr(res, "rowcount", 0))


def _supersede(session: Session, triplet_id: int, annotator_id: int, source: str) -> int | None:
    """Mark the annotator's active votes on the triplet (this source) superseded; the newest one's id.

    An UPDATE first: on SQLite it takes the write lock, so nobody can slip a vote in between.
    """
    ids = session.scalars(
        update(Vote)
        .where(col(Vote.triplet_id) == triplet_id, col(Vote.annotator_id) == annotator_id,
               col(Vote.source) == source, col(Vote.state) == "active")
        .values(state="superseded")
        .returning(col(Vote.id)),
        execution_options={"synchronize_session": "fetch"},
    ).all()
    return max((i for i in ids if i is not None), default=None)


def record_vote(
    session: Session,
    triplet_id: int,
    annotator_id: int,
    choice: str,
    *,
    source: str,
    swapped: bool = False,
    latency_ms: float | None = None,
    rationale: str | None = None,
    confidence: float | None = None,
    group_id: str | None = None,
    session_id: str | None = None,
    external_id: str | None = None,
    meta: dict | None = None,
    supersede: bool = True,
) -> Vote:
    """Add a vote (``choice`` in canonical terms).  Never deletes anything.

    With ``supersede`` the annotator's previous active vote on this triplet (same
    source) is marked ``superseded`` and linked from the new row, keeping history.
    The database holds at most one active vote per (annotator, triplet, source,
    presentation): without ``supersede`` a second one raises :class:`ActiveVoteExists`
    (a concurrent run voted first).  The caller commits; the CLI/TUI commit before
    acknowledging the vote.
    """
    if choice not in CHOICES:
        raise CondsimError(f"unknown choice {choice!r}; expected one of {', '.join(CHOICES)}")
    if source not in SOURCES:
        raise CondsimError(f"unknown vote source {source!r}; expected one of {', '.join(SOURCES)}")
    check_length(group_id, col(Vote.group_id), "group_id")
    check_length(session_id, col(Vote.session_id), "session_id")
    check_length(external_id, col(Vote.external_id), "external_id")
    session.flush()  # the caller's pending changes (e.g. votes it superseded) go first
    for _attempt in range(3):
        replaces = _supersede(session, triplet_id, annotator_id, source) if supersede else None
        stmt = insert_ignoring_conflicts(
            _dialect(session), Vote, index_elements=list(ACTIVE_VOTE_KEY), index_where=text("state = 'active'")
        ).values(
            triplet_id=triplet_id, annotator_id=annotator_id, choice=choice, swapped=swapped, latency_ms=latency_ms,
            rationale=rationale, confidence=confidence, source=source, state="active", group_id=group_id,
            session_id=session_id, external_id=external_id, meta=meta, replaces_id=replaces, created_at=utcnow(),
        )
        vote_id = session.scalars(stmt.returning(col(Vote.id))).first()
        if vote_id is not None:
            v = session.get(Vote, vote_id)
            assert v is not None
            return v
        if not supersede:
            break
        # PostgreSQL: a concurrent transaction committed an active vote after our UPDATE; supersede it too.
    raise ActiveVoteExists(
        f"annotator {annotator_id} already has an active {source} vote on triplet {triplet_id} "
        f"({'swapped' if swapped else 'canonical'} order)"
    )


def undo_vote(session: Session, vote_id: int) -> Vote:
    """Mark a vote undone (the row stays; history is the product)."""
    v = session.get(Vote, vote_id)
    if v is None:
        raise CondsimError(f"no vote {vote_id}")
    v.state = "undone"
    session.add(v)
    session.flush()  # the undone row leaves the active index before the one it replaced comes back
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
            select(Vote)
            .join(Triplet, col(Triplet.id) == col(Vote.triplet_id))
            .where(col(Triplet.criterion_id) == criterion_id, col(Vote.state) == "active")
        ).all()
    )


def documents_by_id(session: Session, ids: Iterable[int]) -> dict[int, Document]:
    ids = list(set(ids))
    out: dict[int, Document] = {}
    for i in range(0, len(ids), 900):
        for d in session.scalars(select(Document).where(col(Document.id).in_(ids[i : i + 900]))).all():
            out[int(d.id or 0)] = d
    return out
