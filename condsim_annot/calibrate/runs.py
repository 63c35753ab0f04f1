"""Reading a stored calibration run back (exports, reports, the leaderboard, views)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm
from sqlalchemy import select
from sqlmodel import col

from ..criteria import get_criterion
from ..db import Store
from ..errors import CondsimError
from ..models import Annotator, CalibrationRun, Criterion, Document, GoldLabel, Triplet, Vote
from ..store_api import documents_by_id
from .load import FITTED
from .tables import PairScore


@dataclass
class RunView:
    criterion: Criterion
    run: CalibrationRun
    summary: dict
    gold: list[dict]  # one per labelled triplet: triplet fields + label, probability, status, n_votes, votes...
    pairs: list[dict]
    docs: dict[int, Document]
    votes: list[dict]  # active votes of the criterion (with annotator name/kind, triplet fields)


def latest_run(session, criterion_id: int) -> CalibrationRun | None:
    return session.scalars(
        select(CalibrationRun)
        .where(col(CalibrationRun.criterion_id) == criterion_id)
        .order_by(col(CalibrationRun.id).desc())
    ).first()


def load_run(store: Store, criterion: str, *, run_id: int | None = None) -> RunView:
    """The latest (or given) calibration run of a criterion with everything exports and reports need."""
    with store.session() as s:
        crit = get_criterion(s, criterion)
        assert crit.id is not None
        run = s.get(CalibrationRun, run_id) if run_id else latest_run(s, crit.id)
        if run is None or run.criterion_id != crit.id:
            raise CondsimError(
                f"criterion {criterion!r} has no calibration run yet: run `condsim-annot calibrate {criterion}` first"
            )
        gl = s.execute(
            select(GoldLabel, Triplet)
            .join(Triplet, col(Triplet.id) == col(GoldLabel.triplet_id))
            .where(col(GoldLabel.calibration_run_id) == run.id)
            .order_by(col(GoldLabel.triplet_id))
        ).all()
        pairs = s.scalars(
            select(PairScore).where(col(PairScore.calibration_run_id) == run.id).order_by(col(PairScore.id))
        ).all()
        vrows = s.execute(
            select(Vote, col(Annotator.name), col(Annotator.kind), Triplet)
            .join(Triplet, col(Triplet.id) == col(Vote.triplet_id))
            .join(Annotator, col(Annotator.id) == col(Vote.annotator_id))
            .where(col(Triplet.criterion_id) == crit.id, col(Vote.state) == "active")
            .order_by(col(Vote.id))
        ).all()
        ids: set[int] = set()
        for _g, t in gl:
            ids.update((t.anchor_id, t.first_id, t.second_id))
        for p in pairs:
            ids.update((p.anchor_id, p.candidate_id))
        for _, _, _, t in vrows:
            ids.update((t.anchor_id, t.first_id, t.second_id))
        docs = documents_by_id(s, ids)
    votes, gold = _vote_and_gold_rows(vrows, gl)
    pr = [
        {
            "anchor_id": p.anchor_id,
            "candidate_id": p.candidate_id,
            "score": p.score,
            "stderr": p.stderr,
            "component": p.component,
            "n_votes": p.n_votes,
        }
        for p in pairs
    ]
    return RunView(
        criterion=crit, run=run, summary=dict(run.summary or {}), gold=gold, pairs=pr, docs=docs, votes=votes
    )


def _vote_and_gold_rows(vrows: Any, gl: Any) -> tuple[list[dict], list[dict]]:
    """Plain dicts of the active votes and of the run's labels (with the annotators who voted each triplet)."""
    votes_by_trip: dict[int, list[dict]] = defaultdict(list)
    votes = []
    for v, an, ak, t in vrows:
        d = {
            "id": v.id,
            "triplet_id": v.triplet_id,
            "annotator": an,
            "kind": ak,
            "choice": v.choice,
            "swapped": v.swapped,
            "latency_ms": v.latency_ms,
            "confidence": v.confidence,
            "source": v.source,
            "group_id": v.group_id,
            "created_at": v.created_at,
            "anchor_id": t.anchor_id,
            "first_id": t.first_id,
            "second_id": t.second_id,
            "is_attention_check": t.is_attention_check,
            "expected": t.expected,
            "meta": v.meta,
        }
        votes.append(d)
        votes_by_trip[v.triplet_id].append(d)
    gold = []
    for g, t in gl:
        vs = votes_by_trip.get(t.id, [])
        gold.append(
            {
                "triplet_id": t.id,
                "anchor_id": t.anchor_id,
                "first_id": t.first_id,
                "second_id": t.second_id,
                "label": g.label,
                "probability": g.probability,
                "status": g.status,
                "n_votes": g.n_votes,
                "method": t.method,
                "strategy": t.strategy,
                "proposal_run": t.proposal_run,
                "triplet_meta": t.meta or {},
                "is_attention_check": t.is_attention_check,
                "annotators": sorted({v["annotator"] for v in vs if v["choice"] in FITTED}),
            }
        )
    return votes, gold


def derived_triplets(view: RunView, *, min_confidence: float = 0.9, limit_per_anchor: int = 200) -> list[dict]:
    """Labels for (anchor; x, y) nobody voted on, by transitivity through the pair scores.

    Only pairs asked under the same anchor and in the same component; probability from
    the stored stderr (independence assumed, so conservative for correlated scores)."""
    voted = {
        (g["anchor_id"], min(g["first_id"], g["second_id"]), max(g["first_id"], g["second_id"])) for g in view.gold
    }
    by_anchor: dict[int, list[dict]] = defaultdict(list)
    for p in view.pairs:
        by_anchor[p["anchor_id"]].append(p)
    out = []
    for anc, ps in by_anchor.items():
        ps = sorted(ps, key=lambda p: -p["score"])
        n = 0
        for i in range(len(ps)):
            for j in range(i + 1, len(ps)):
                x, y = ps[i], ps[j]
                if x["component"] != y["component"]:
                    continue
                f, sec = sorted((x["candidate_id"], y["candidate_id"]))
                if (anc, f, sec) in voted:
                    continue
                sd = math.sqrt(x["stderr"] ** 2 + y["stderr"] ** 2) or 1e-9
                pr = float(norm.cdf((x["score"] - y["score"]) / sd))
                if pr < min_confidence:
                    continue
                out.append(
                    {
                        "triplet_id": None,
                        "anchor_id": anc,
                        "first_id": f,
                        "second_id": sec,
                        "label": "first" if x["candidate_id"] == f else "second",
                        "probability": pr,
                        "status": "derived",
                        "n_votes": 0,
                        "method": "derived",
                        "strategy": None,
                        "proposal_run": None,
                        "triplet_meta": {},
                        "is_attention_check": False,
                        "annotators": [],
                    }
                )
                n += 1
                if n >= limit_per_anchor:
                    break
            if n >= limit_per_anchor:
                break
    return out
