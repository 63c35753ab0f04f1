"""The offline demo: 270 CHAMP competition math problems viewed under two criteria.

CHAMP (MIT licence, PyPI ``champ-dataset``) annotates each problem with the
general math *concepts* its solution uses.  Two problems sharing a concept are a
silver "same technique" pair; the problem *category* (algebra, number theory, ...)
is the silver "same topic" label.  The two views disagree often, which is what
conditional similarity is about.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import champ_dataset
import yaml
from sqlalchemy import select

from .criteria import get_criterion
from .db import Store
from .models import Document, Triplet, Vote
from .store_api import documents_by_id, get_or_create_annotator, record_vote

DEMO_CRITERIA = [
    {
        "name": "same-technique",
        "description": "The two problems are solved with the same key technique or mathematical concept "
        "(e.g. pigeonhole, AM-GM, recursion, modular arithmetic), regardless of topic or wording.",
        "instruction": "Represent the key solution technique of this math problem "
        "for retrieving problems solved the same way: ",
    },
    {
        "name": "same-topic",
        "description": "The two problems belong to the same area of mathematics "
        "(algebra, combinatorics, number theory, inequality, polynomial, sequence, geometry), regardless of technique.",
        "instruction": "Represent the mathematical topic of this problem for retrieving problems of the same area: ",
    },
]


def champ_records() -> list[dict[str, Any]]:
    """One dict per CHAMP problem: id, text, category, concepts (general concept ids), answer."""
    ds = champ_dataset.load("v0")
    out = []
    for pid, p in sorted(ds.problems.items()):
        concepts = sorted(c for c in (p.ch_list or []) if c.startswith("C_"))
        out.append({"id": pid, "text": p.text, "category": p.category, "concepts": concepts, "answer": p.answer})
    return out


def write_demo_files(folder: str | Path) -> tuple[str, str]:
    """Write the corpus (JSONL) and the criteria (YAML) the demo ingests, as a user would."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "champ.jsonl"
    with corpus.open("w", encoding="utf-8") as f:
        for r in champ_records():
            f.write(json.dumps(r) + "\n")
    crit = folder / "criteria.yaml"
    crit.write_text(yaml.safe_dump({"criteria": DEMO_CRITERIA}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return str(corpus), str(crit)


def silver_similarity(criterion: str, a: dict, b: dict) -> float:
    """CHAMP's own annotations as a silver similarity under each demo criterion."""
    if criterion == "same-topic":
        return 1.0 if a.get("category") == b.get("category") else 0.0
    ca, cb = set(a.get("concepts") or []), set(b.get("concepts") or [])
    if not ca or not cb:
        return 0.0
    return len(ca & cb) / len(ca | cb)


def silver_choice(criterion: str, anchor: dict, first: dict, second: dict) -> str:
    """first | second | tie, in canonical terms, from the silver similarity."""
    sx, sy = silver_similarity(criterion, anchor, first), silver_similarity(criterion, anchor, second)
    if sx > sy:
        return "first"
    if sy > sx:
        return "second"
    return "tie"


#: The demo's crowd: CHAMP's own annotations (noise 0) and simulated annotators who
#: answer like it but replace a share of their answers by a random one, so the report
#: has agreement statistics to show and the model has annotators of different quality
#: to tell apart (the spammer should end with beta near 0).
SIMULATED_CROWD = (("sim-careful", 0.1), ("sim-hasty", 0.3), ("sim-spammer", 1.0))


def _silver_record(d: Document) -> dict[str, Any]:
    m = d.meta or {}
    return {"category": m.get("category"), "concepts": m.get("concepts") or []}


def add_silver_votes(store: Store, criterion: str, annotator: str = "champ-silver", *, noise: float = 0.0,
                     seed: int = 0) -> int:
    """Vote every unvoted triplet of ``criterion`` from CHAMP's own annotations (source ``import``).

    CHAMP's authors annotated each problem with the concepts its solution uses and a
    category; these give a *silver* answer for both demo criteria.  Marked as an
    import from a named annotator, so it never mixes silently with real votes.  With
    ``noise`` > 0 the annotator is simulated: that share of answers is replaced by a
    uniformly random first | second | tie (seeded, so re-runs agree).
    """
    n = 0
    with store.transaction() as s:
        crit = get_criterion(s, criterion)
        params: dict[str, Any] = {"source": "CHAMP concept/category annotations"}
        if noise:
            params.update(simulated=True, noise=noise)
        ann = get_or_create_annotator(s, annotator, kind="human", params=params)
        rng = random.Random(f"{seed}:{criterion}:{annotator}")
        voted = set(s.scalars(select(Vote.triplet_id).where(Vote.annotator_id == ann.id)).all())
        trips = [t for t in s.scalars(select(Triplet).where(Triplet.criterion_id == crit.id)).all()
                 if t.id not in voted]
        docs = documents_by_id(s, [i for t in trips for i in (t.anchor_id, t.first_id, t.second_id)])
        for t in trips:
            anchor, first, second = (_silver_record(docs[i]) for i in (t.anchor_id, t.first_id, t.second_id))
            choice = silver_choice(criterion, anchor, first, second)
            why = "CHAMP silver annotation"
            if noise and rng.random() < noise:
                choice, why = rng.choice(("first", "second", "tie")), f"simulated annotator (noise {noise})"
            record_vote(s, t.id, ann.id, choice, source="import", rationale=why)
            n += 1
    return n
