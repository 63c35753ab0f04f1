"""The offline demo: 270 CHAMP competition math problems viewed under two criteria.

CHAMP (MIT licence, PyPI ``champ-dataset``) annotates each problem with the
general math *concepts* its solution uses.  Two problems sharing a concept are a
silver "same technique" pair; the problem *category* (algebra, number theory, ...)
is the silver "same topic" label.  The two views disagree often, which is what
conditional similarity is about.
"""

from __future__ import annotations

from typing import Any

DEMO_CRITERIA = [
    {
        "name": "same-technique",
        "description": "The two problems are solved with the same key technique or mathematical concept "
        "(e.g. pigeonhole, AM-GM, recursion, modular arithmetic), regardless of topic or wording.",
        "instruction": "Represent the key solution technique of this math problem for retrieving problems solved the same way: ",
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
    import champ_dataset

    ds = champ_dataset.load("v0")
    out = []
    for pid, p in sorted(ds.problems.items()):
        concepts = sorted(c for c in (p.ch_list or []) if c.startswith("C_"))
        out.append({"id": pid, "text": p.text, "category": p.category, "concepts": concepts, "answer": p.answer})
    return out
