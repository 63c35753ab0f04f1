"""One criterion's active votes from the store as arrays over pair items {anchor, candidate}.

* votes that enter a fit: ``first`` / ``second`` / ``tie``; ``cant_tell`` is counted (ill-defined
  triplets are flagged) but not fitted; ``skip`` is ignored; undone and superseded votes never count.
* the k-1 comparisons of one best-of-k answer (same ``Vote.group_id``, annotator and anchor, one
  common winner) enter as one Luce choice.
* attention checks with a known answer add that answer as a fixed "key" annotator (unless most
  annotators fail them: then the checks, not the annotators, are suspect).
* :func:`load_features`: the proposer methods' scores of each pair (``TripletMargin``), standardised
  per method, the features of :class:`.model.TripletModel`'s prior.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ..models import Annotator, Criterion, Triplet, Vote
from ..propose.tables import TripletMargin

KEY_ANNOTATOR = "__attention_key__"
KEY_BETA = 4.0
ATTENTION_KEY_REPEATS = 3
ATTENTION_FAIL_BELOW = 0.8
ILL_DEFINED_SHARE = 0.5
DECISIVE = ("first", "second")
FITTED = ("first", "second", "tie")


@dataclass
class Comparisons:
    """One criterion's active votes as arrays over pair items {anchor, candidate}."""

    criterion_id: int
    criterion: str
    criterion_version: int
    items: list[tuple[int, int]] = field(default_factory=list)  # item -> (anchor_id, candidate_id)
    item_of: dict[tuple[int, int], int] = field(default_factory=dict)  # (min, max) doc ids -> item
    triplets: dict[int, dict] = field(default_factory=dict)
    annotators: list[dict] = field(default_factory=list)  # index -> {id, name, kind}
    # pairwise comparisons (winner, loser, tie flag, annotator index, triplet id)
    winners: Any = None
    losers: Any = None
    ties: Any = None
    ann: Any = None
    trip: Any = None
    # Luce choices: (chosen item, tuple of all items offered, annotator index)
    choice_sets: list[tuple[int, tuple[int, ...], int]] = field(default_factory=list)
    choice_trips: list[list[int]] = field(default_factory=list)
    votes: list[dict] = field(default_factory=list)  # every active vote, for statistics
    key_index: int | None = None  # annotator index of the attention key, if any
    key_suspect: bool = False  # most annotators fail the attention checks: the key was left out

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item(self, anchor: int, cand: int) -> int:
        k = (min(anchor, cand), max(anchor, cand))
        i = self.item_of.get(k)
        if i is None:
            i = self.item_of[k] = len(self.items)
            self.items.append((anchor, cand))
        return i


def load_comparisons(session: Session, criterion: Criterion, *, attention_key: bool = True) -> Comparisons:
    """One criterion's triplets and active votes as :class:`Comparisons` (best-of-k answers as Luce choices,
    attention checks as a fixed key annotator unless suspect)."""
    assert criterion.id is not None
    data = Comparisons(criterion.id, criterion.name, criterion.version)
    _load_triplets(session, data)
    _load_votes(session, data)
    in_luce = _luce_choices(data)
    _comparison_arrays(data, in_luce, attention_key=attention_key)
    return data


def _load_triplets(session: Session, data: Comparisons) -> None:
    trows = session.execute(
        select(
            col(Triplet.id),
            col(Triplet.anchor_id),
            col(Triplet.first_id),
            col(Triplet.second_id),
            col(Triplet.method),
            col(Triplet.strategy),
            col(Triplet.is_attention_check),
            col(Triplet.expected),
            col(Triplet.meta),
        )
        .where(col(Triplet.criterion_id) == data.criterion_id)
        .order_by(col(Triplet.id))
    ).all()
    for tid, a, f, sec, method, strategy, att, exp, meta in trows:
        data.triplets[tid] = {
            "id": tid,
            "anchor": a,
            "first": f,
            "second": sec,
            "method": method,
            "strategy": strategy,
            "attention": bool(att),
            "expected": exp,
            "meta": meta or {},
            "i_first": data.item(a, f),
            "i_second": data.item(a, sec),
        }


def _load_votes(session: Session, data: Comparisons) -> None:
    vrows = session.execute(
        select(
            col(Vote.id),
            col(Vote.triplet_id),
            col(Vote.annotator_id),
            col(Vote.choice),
            col(Vote.swapped),
            col(Vote.latency_ms),
            col(Vote.confidence),
            col(Vote.source),
            col(Vote.group_id),
            col(Vote.created_at),
            col(Annotator.name),
            col(Annotator.kind),
        )
        .join(Triplet, col(Triplet.id) == col(Vote.triplet_id))
        .join(Annotator, col(Annotator.id) == col(Vote.annotator_id))
        .where(col(Triplet.criterion_id) == data.criterion_id, col(Vote.state) == "active")
        .order_by(col(Vote.id))
    ).all()
    ann_idx: dict[int, int] = {}
    for vid, tid, aid, choice, swapped, lat, conf, source, gid, created, aname, akind in vrows:
        if aid not in ann_idx:
            ann_idx[aid] = len(data.annotators)
            data.annotators.append({"id": aid, "name": aname, "kind": akind})
        data.votes.append(
            {
                "id": vid,
                "triplet_id": tid,
                "ann": ann_idx[aid],
                "choice": choice,
                "swapped": bool(swapped),
                "latency_ms": lat,
                "confidence": conf,
                "source": source,
                "group_id": gid,
                "created_at": created,
            }
        )


def _luce_choices(data: Comparisons) -> set[int]:
    """Best-of-k groups that are one consistent answer become Luce choices; returns their vote ids."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for v in data.votes:
        if v["group_id"] and v["choice"] in DECISIVE:
            groups[(v["group_id"], v["ann"])].append(v)
    in_luce: set[int] = set()
    for (_gid, a), vs in groups.items():
        if len(vs) < 2:
            continue
        anchors = {data.triplets[v["triplet_id"]]["anchor"] for v in vs}
        winners: set[int] = set()
        offered: set[int] = set()
        for v in vs:
            t = data.triplets[v["triplet_id"]]
            w, lo_ = (t["i_first"], t["i_second"]) if v["choice"] == "first" else (t["i_second"], t["i_first"])
            winners.add(w)
            offered.update((w, lo_))
        if len(anchors) != 1 or len(winners) != 1 or len(offered) != len(vs) + 1:
            continue  # a ranking or an inconsistent group: keep its votes as plain comparisons
        chosen = next(iter(winners))
        data.choice_sets.append((chosen, tuple(sorted(offered)), a))
        data.choice_trips.append([v["triplet_id"] for v in vs])
        in_luce.update(v["id"] for v in vs)
    return in_luce


def _comparison_arrays(data: Comparisons, in_luce: set[int], *, attention_key: bool) -> None:
    """Pairwise comparison arrays of the fitted votes (and the attention key's answers)."""
    W, L, T, A, TR = [], [], [], [], []
    for v in data.votes:
        if v["choice"] not in FITTED or v["id"] in in_luce:
            continue
        t = data.triplets[v["triplet_id"]]
        if v["choice"] == "second":
            W.append(t["i_second"])
            L.append(t["i_first"])
        else:
            W.append(t["i_first"])
            L.append(t["i_second"])
        T.append(v["choice"] == "tie")
        A.append(v["ann"])
        TR.append(t["id"])
    data.key_suspect = attention_key and attention_key_suspect(data)
    if attention_key and not data.key_suspect:
        keyed = [t for t in data.triplets.values() if t["attention"] and t["expected"] in DECISIVE]
        if keyed:
            data.key_index = len(data.annotators)
            data.annotators.append({"id": None, "name": KEY_ANNOTATOR, "kind": "key"})
            for t in keyed:
                w, lo_ = (t["i_first"], t["i_second"]) if t["expected"] == "first" else (t["i_second"], t["i_first"])
                for _ in range(ATTENTION_KEY_REPEATS):
                    W.append(w)
                    L.append(lo_)
                    T.append(False)
                    A.append(data.key_index)
                    TR.append(t["id"])
    data.winners = np.asarray(W, dtype=np.int64)
    data.losers = np.asarray(L, dtype=np.int64)
    data.ties = np.asarray(T, dtype=bool)
    data.ann = np.asarray(A, dtype=np.int64)
    data.trip = np.asarray(TR, dtype=np.int64)


def _is_attention_answer(data: Comparisons, v: dict) -> bool:
    """The vote answers an attention check with a known answer (skips do not count)."""
    t = data.triplets[v["triplet_id"]]
    return bool(t["attention"] and t["expected"] in DECISIVE and v["choice"] != "skip")


def attention_key_suspect(data: Comparisons) -> bool:
    """True when most annotators fail the attention checks: then the checks are suspect, not them.

    Attention checks are triplets every proposer method found obvious; under a criterion
    the methods capture badly (e.g. proof technique vs embeddings) their "expected"
    answers can be wrong.  When the median annotator (among those with two or more
    checks, at least two of them) scores below the threshold, the checks are left out
    of the fit and nobody is flagged; the report says so."""
    per: dict[int, list[bool]] = defaultdict(list)
    for v in data.votes:
        if _is_attention_answer(data, v):
            per[v["ann"]].append(v["choice"] == data.triplets[v["triplet_id"]]["expected"])
    accs = [sum(x) / len(x) for x in per.values() if len(x) >= 2]
    return len(accs) >= 2 and statistics.median(accs) < ATTENTION_FAIL_BELOW


def load_features(session: Session, data: Comparisons) -> tuple[np.ndarray, list[str]]:
    """(n_items, n_methods) standardised proposer scores of each pair, and the method names.

    ``TripletMargin.score_first`` is the method's score of {anchor, first} (``score_second`` of
    {anchor, second}); a pair scored several times (other triplets, other runs) gets the mean.  Each
    method is z-scored over the pairs it scored; a pair a method did not score gets 0 (the mean).
    Methods that scored fewer than 2 distinct values carry no information and are left out."""
    rows = session.execute(
        select(
            col(TripletMargin.triplet_id),
            col(TripletMargin.method),
            col(TripletMargin.score_first),
            col(TripletMargin.score_second),
        )
        .join(Triplet, col(Triplet.id) == col(TripletMargin.triplet_id))
        .where(col(Triplet.criterion_id) == data.criterion_id)
        .order_by(col(TripletMargin.id))
    ).all()
    acc: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for tid, method, sf, ss in rows:
        t = data.triplets.get(tid)
        if t is None or sf is None or ss is None:
            continue
        items, vals = acc[method]
        items.extend((t["i_first"], t["i_second"]))
        vals.extend((float(sf), float(ss)))
    cols, names = [], []
    for method in sorted(acc):
        items_l, vals_l = acc[method]
        it = np.asarray(items_l, dtype=np.int64)
        v = np.asarray(vals_l, dtype=np.float64)
        ok = np.isfinite(v)
        it, v = it[ok], v[ok]
        cnt = np.bincount(it, minlength=data.n_items)
        mean = np.bincount(it, v, minlength=data.n_items) / np.maximum(cnt, 1)
        seen = cnt > 0
        if seen.sum() < 2 or np.std(mean[seen]) == 0:
            continue
        column = np.zeros(data.n_items)
        column[seen] = (mean[seen] - mean[seen].mean()) / mean[seen].std()
        cols.append(column)
        names.append(method)
    feats = np.stack(cols, axis=1) if cols else np.zeros((data.n_items, 0))
    return feats, names
