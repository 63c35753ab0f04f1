"""Counts for ``condsim-annot status`` (stable JSON keys: scripts depend on them)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from .db import Store
from .models import SOURCES, CalibrationRun, Corpus, Criterion, Document, GoldLabel, Triplet, Vote


def status_counts(store: Store) -> dict[str, Any]:
    with store.session() as s:
        docs = s.scalar(select(func.count()).select_from(Document)) or 0
        corpora = {name: n for name, n in s.execute(
            select(Corpus.name, func.count(Document.id))
            .outerjoin(Document, Document.corpus_id == Corpus.id).group_by(Corpus.name)
        ).all()}
        crits = s.scalars(select(Criterion).order_by(Criterion.name)).all()
        trip = dict(s.execute(select(Triplet.criterion_id, func.count()).group_by(Triplet.criterion_id)).all())
        votes: dict[int, dict[str, int]] = {}
        for cid, source, n in s.execute(
            select(Triplet.criterion_id, Vote.source, func.count())
            .join(Triplet, Triplet.id == Vote.triplet_id)
            .where(Vote.state == "active")
            .group_by(Triplet.criterion_id, Vote.source)
        ).all():
            votes.setdefault(cid, {})[source] = n
        # gold = gold labels of the latest calibration run of each criterion
        latest = (select(CalibrationRun.criterion_id, func.max(CalibrationRun.id).label("run"))
                  .group_by(CalibrationRun.criterion_id).subquery())
        gold = dict(s.execute(
            select(GoldLabel.criterion_id, func.count())
            .join(latest, latest.c.run == GoldLabel.calibration_run_id)
            .where(GoldLabel.status == "gold")
            .group_by(GoldLabel.criterion_id)
        ).all())
    out: dict[str, Any] = {"documents": docs, "corpora": corpora, "criteria": {}}
    for c in crits:
        v = {src: votes.get(c.id, {}).get(src, 0) for src in SOURCES}
        out["criteria"][c.name] = {
            "version": c.version,
            "triplets": trip.get(c.id, 0),
            "votes": v,
            "votes_total": sum(v.values()),
            "gold": gold.get(c.id, 0),
        }
    return out


def render_status(counts: dict[str, Any], console: Console) -> None:
    corp = ", ".join(f"{k} ({v})" for k, v in counts["corpora"].items()) or "none"
    console.print(f"[bold]{counts['documents']}[/] documents in corpora: {corp}")
    if not counts["criteria"]:
        console.print("no criteria yet: `condsim-annot criteria add NAME --description ...`")
        return
    t = Table("criterion", "v", "triplets", "tui", "argilla", "llm", "import", "review", "gold", title="per criterion")
    for name, c in counts["criteria"].items():
        v = c["votes"]
        per_source = (str(v[k]) for k in ("tui", "argilla", "llm", "import", "review"))
        t.add_row(name, str(c["version"]), str(c["triplets"]), *per_source, str(c["gold"]))
    console.print(t)
