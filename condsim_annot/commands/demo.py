"""``condsim-annot demo``: the whole loop, offline, on the bundled CHAMP corpus.

It goes through the same public functions the CLI commands use, so it doubles as a
smoke test of a fresh install: ingest -> criteria -> propose -> (silver votes) ->
calibrate -> export -> report -> TUI.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import click

from condsim_annot.cli import Ctx, console, out, pass_ctx


#: The demo's crowd: CHAMP's own annotations (noise 0) and simulated annotators who
#: answer like it but replace a share of their answers by a random one, so the report
#: has agreement statistics to show and the model has annotators of different quality
#: to tell apart (the spammer should end with beta near 0).
SIMULATED_CROWD = (("sim-careful", 0.1), ("sim-hasty", 0.3), ("sim-spammer", 1.0))


def add_silver_votes(store, criterion: str, annotator: str = "champ-silver", *, noise: float = 0.0,
                     seed: int = 0) -> int:
    """Vote every unvoted triplet of ``criterion`` from CHAMP's own annotations (source ``import``).

    CHAMP's authors annotated each problem with the concepts its solution uses and a
    category; these give a *silver* answer for both demo criteria.  Marked as an
    import from a named annotator, so it never mixes silently with real votes.  With
    ``noise`` > 0 the annotator is simulated: that share of answers is replaced by a
    uniformly random first | second | tie (seeded, so re-runs agree).
    """
    import random

    from sqlalchemy import select

    from ..demo import silver_choice
    from ..models import Criterion, Triplet, Vote
    from ..store_api import documents_by_id, get_or_create_annotator, record_vote

    n = 0
    with store.transaction() as s:
        crit = s.scalars(select(Criterion).where(Criterion.name == criterion)).one()
        params = {"source": "CHAMP concept/category annotations"}
        if noise:
            params.update(simulated=True, noise=noise)
        ann = get_or_create_annotator(s, annotator, kind="human", params=params)
        rng = random.Random(f"{seed}:{criterion}:{annotator}")
        voted = set(s.scalars(select(Vote.triplet_id).where(Vote.annotator_id == ann.id)).all())
        trips = [t for t in s.scalars(select(Triplet).where(Triplet.criterion_id == crit.id)).all() if t.id not in voted]
        docs = documents_by_id(s, [i for t in trips for i in (t.anchor_id, t.first_id, t.second_id)])

        def rec(d):
            m = d.meta or {}
            return {"category": m.get("category"), "concepts": m.get("concepts") or []}

        for t in trips:
            choice = silver_choice(criterion, rec(docs[t.anchor_id]), rec(docs[t.first_id]), rec(docs[t.second_id]))
            why = "CHAMP silver annotation"
            if noise and rng.random() < noise:
                choice, why = rng.choice(("first", "second", "tie")), f"simulated annotator (noise {noise})"
            record_vote(s, t.id, ann.id, choice, source="import", rationale=why)
            n += 1
    return n


@click.command()
@click.option("--dir", "folder", default="condsim-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo writes its corpus, store (unless --db is given), exports and report.")
@click.option("--budget", default=120, show_default=True, help="Triplets to propose per criterion.")
@click.option("--methods", default="embedding,bm25", show_default=True, help="Proposer methods (LLM methods need an endpoint).")
@click.option("--silver/--no-silver", default=True, show_default=True,
              help="Vote the proposals with CHAMP's own concept annotations (a silver annotator), so calibration has data.")
@click.option("--simulated/--no-simulated", default=True, show_default=True,
              help="Also add simulated annotators (CHAMP's answers with 10%, 30% and 100% of them random), "
                   "so the report has agreement to measure and calibration has noise to find.")
@click.option("--tui/--no-tui", "open_tui", default=None,
              help="Open the labeling TUI at the end (default: when run in a terminal).")
@click.option("--annotator", default="you", show_default=True, help="Your annotator name in the TUI.")
@pass_ctx
def demo(ctx: Ctx, folder, budget, methods, silver, simulated, open_tui, annotator):
    """Build a demo project offline and run the whole loop on it.

    270 competition math problems (CHAMP, MIT) under two criteria, "same-technique"
    and "same-topic", where different pairs are similar under each: ingest, propose
    triplets with the ensemble, vote them with CHAMP's silver annotations (and, unless
    --no-simulated, three simulated annotators of decreasing care), calibrate,
    export gold triplets for sentence-transformers and write an HTML report; then
    open the TUI so you can add your own votes.

    \b
    Example:
      condsim-annot demo                       # ./condsim-demo/{condsim.db,report-*.html,export-*}
      condsim-annot demo --no-tui --budget 300
      condsim-annot --db postgresql+psycopg://me@localhost/demo demo
    """
    from ..criteria import load_criteria_file
    from ..db import redact
    from ..demo import DEMO_CRITERIA, write_demo_files
    from ..ingest import ingest

    _quiet_library_progress_bars()
    t0 = time.perf_counter()
    folder_p = Path(folder)
    folder_p.mkdir(parents=True, exist_ok=True)
    if ctx.db is None:
        ctx.db = str(folder_p / "condsim.db")
    store = ctx.store(create=True)
    out.rule("[bold]condsim-annot demo")
    out.print(f"store: {redact(store.url)}")

    corpus_file, crit_file = write_demo_files(folder_p)
    res = ingest(store, [corpus_file], corpus="champ")
    out.print(f"[bold]1. ingest[/] {corpus_file}: {res.added} added, {res.unchanged} already there")
    crits = load_criteria_file(store, crit_file, update_existing=True)
    out.print(f"[bold]2. criteria[/] {', '.join(c.name for c in crits)} (from {crit_file})")

    from condsim_annot.propose.select import propose

    for c in DEMO_CRITERIA:
        summ = propose(store, c["name"], methods=methods, budget=budget)
        out.print(f"[bold]3. propose[/] {c['name']}: {_summary_line(summ)}")

    if silver:
        for c in DEMO_CRITERIA:
            n = add_silver_votes(store, c["name"])
            msg = f"{n} silver votes from CHAMP's annotations (annotator champ-silver)"
            if simulated:
                for who, noise in SIMULATED_CROWD:
                    add_silver_votes(store, c["name"], who, noise=noise)
                msg += f" + simulated {', '.join(f'{w} ({int(nz * 100)}% random)' for w, nz in SIMULATED_CROWD)}"
            out.print(f"[bold]4. votes[/] {c['name']}: {msg}")

        from condsim_annot.calibrate.pipeline import calibrate
        from condsim_annot.exporters.export import export
        from condsim_annot.exporters.report import write_report

        for c in DEMO_CRITERIA:
            name = c["name"]
            # with one silver annotator a single vote per triplet is all there is
            mv = 2 if simulated else 1
            summ = calibrate(store, name, min_votes=mv, command=f"condsim-annot calibrate {name} --min-votes {mv}")
            gold = summ.get("gold", {})
            out.print(f"[bold]5. calibrate[/] {name}: gold counts {gold}; {_betas(summ)}")
            try:
                ex = export(store, name, "st", folder_p / f"export-{name}-st", min_confidence=0.9)
                out.print(f"[bold]6. export[/] {name}: {ex.get('rows', ex)} triplets -> {folder_p / f'export-{name}-st'}")
            except Exception as exc:  # e.g. nothing above the confidence threshold
                out.print(f"[bold]6. export[/] {name}: skipped ({exc})")
            html = folder_p / f"report-{name}.html"
            write_report(store, name, html=str(html), md=str(folder_p / f"report-{name}.md"),
                         command=f"condsim-annot report {name} --html {html}")
            out.print(f"[bold]7. report[/] {html}")

    # the silver crowd already voted every triplet: your votes come on top of theirs
    crowd = (1 + len(SIMULATED_CROWD) * simulated) if silver else 0
    overlap = crowd + 1
    out.print(f"done in {time.perf_counter() - t0:.0f}s. Next: `condsim-annot --db {ctx.db} status`")
    if open_tui is None:
        open_tui = sys.stdin.isatty() and sys.stdout.isatty()
    if open_tui:
        try:
            from condsim_annot.tui.app import run_tui
        except ImportError:
            console.print("the TUI is not installed in this build")
            return
        run_tui(store.url, annotator=annotator, criterion=DEMO_CRITERIA[0]["name"], overlap=overlap)
    else:
        out.print(f"label yourself: condsim-annot --db {ctx.db} tui --annotator {annotator} --criterion same-technique"
                  f" --overlap {overlap}")


def register(main: click.Group) -> None:
    main.add_command(demo)
def _quiet_library_progress_bars() -> None:
    """Our own steps print one line each; the libraries' per-file bars are noise here."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
    except Exception:
        pass


def _betas(summ: dict) -> str:
    """One line on what calibration learned about each annotator (beta: small = noisy)."""
    anns = summ.get("annotators") or []
    parts = [f"{a.get('name')} {a.get('beta', float('nan')):.2f}" for a in anns if a.get("beta") is not None]
    return "annotator beta: " + ", ".join(parts) if parts else ""


def _summary_line(summ) -> str:
    for attr in ("added", "n_added"):
        if hasattr(summ, attr):
            extra = f", total {getattr(summ, 'total')}" if hasattr(summ, "total") else ""
            return f"{getattr(summ, attr)} triplets added{extra}"
    return str(summ)
