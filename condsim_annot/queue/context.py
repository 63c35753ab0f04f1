"""The state one queue session shares with its mode: store, slots, criteria, statistics, randomness.

One ``random.Random`` serves every draw (A/B order, attention checks, grid order) in a fixed
sequence, so a seeded session shows the same screens every time."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..db import Store
from .claims import ClaimStore
from .items import CriterionInfo
from .stats import SessionStats


@dataclass
class QueueContext:
    """One annotator's session: the store, their slots, the criteria and the session's randomness."""

    store: Store
    annotator_id: int
    key: str  # Vote.session_id of this session's votes
    criteria: dict[int, CriterionInfo]
    corpus: dict[int, int | None]  # criterion id -> its corpus
    claims: ClaimStore
    stats: SessionStats
    rng: random.Random
    k: int = 4
    source: str = "tui"  # Vote.source of this session's answers
