"""``condsim-annot demo``: the whole loop, offline, on the bundled CHAMP corpus.

It goes through the same public functions the CLI commands use, so it doubles as a
smoke test of a fresh install: ingest -> criteria -> propose -> (silver votes) ->
calibrate -> export -> report -> TUI.  The library modules are imported when the
command runs: they load SQLAlchemy, numpy and the models, which ``--help`` should not wait for.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.errors import CondsimError


def _quiet_library_progress_bars() -> None:
    """Our own steps print one line each; the libraries' per-file bars are noise here."""
    import datasets  # heavy: only the demo and the exports need it
    from transformers.utils import logging as tlog

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    datasets.disable_progress_bars()
    tlog.disable_progress_bar()


def _betas(summ: dict[str, Any]) -> str:
    """One line on what calibration learned about each annotator (beta: small = noisy)."""
    anns = summ.get("annotators") or []
    parts = [f"{a.get('name')} {a.get('beta', float('nan')):.2f}" for a in anns if a.get("beta") is not None]
    return "annotator beta: " + ", ".join(parts) if parts else ""


def _summary_line(summ: Any) -> str:
    for attr in ("added", "n_added"):
        if hasattr(summ, attr):
            extra = f", total {summ.total}" if hasattr(summ, "total") else ""
            return f"{getattr(summ, attr)} triplets added{extra}"
    return str(summ)


def _ingest_and_propose(store: Any, folder: Path, budget: int, methods: str) -> None:
    """Steps 1-3: the corpus and criteria files written as a user would, ingested, proposed."""
    from condsim_annot.criteria import load_criteria_file
    from condsim_annot.demo import DEMO_CRITERIA, write_demo_files
    from condsim_annot.ingest import ingest
    from condsim_annot.propose.select import propose

    corpus_file, crit_file = write_demo_files(folder)
    res = ingest(store, [corpus_file], corpus="champ")
    out.print(f"[bold]1. ingest[/] {corpus_file}: {res.added} added, {res.unchanged} already there")
    crits = load_criteria_file(store, crit_file, update_existing=True)
    out.print(f"[bold]2. criteria[/] {', '.join(c.name for c in crits)} (from {crit_file})")
    for c in DEMO_CRITERIA:
        summ = propose(store, c["name"], methods=methods, budget=budget)
        out.print(f"[bold]3. propose[/] {c['name']}: {_summary_line(summ)}")


def _silver_votes(store: Any, simulated: bool) -> None:
    """Step 4: CHAMP's own annotations as a silver annotator (plus the simulated crowd)."""
    from condsim_annot.demo import DEMO_CRITERIA, SIMULATED_CROWD, add_silver_votes

    for c in DEMO_CRITERIA:
        n = add_silver_votes(store, c["name"])
        msg = f"{n} silver votes from CHAMP's annotations (annotator champ-silver)"
        if simulated:
            for who, noise in SIMULATED_CROWD:
                add_silver_votes(store, c["name"], who, noise=noise)
            msg += f" + simulated {', '.join(f'{w} ({int(nz * 100)}% random)' for w, nz in SIMULATED_CROWD)}"
        out.print(f"[bold]4. votes[/] {c['name']}: {msg}")


def _calibrate_export_report(store: Any, folder: Path, simulated: bool) -> None:
    """Steps 5-7 per criterion: calibrate, export gold triplets for sentence-transformers, write the report."""
    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.demo import DEMO_CRITERIA
    from condsim_annot.exporters.export import export
    from condsim_annot.exporters.report import write_report

    for c in DEMO_CRITERIA:
        name = c["name"]
        mv = 2 if simulated else 1  # with one silver annotator a single vote per triplet is all there is
        summ = calibrate(store, name, min_votes=mv, command=f"condsim-annot calibrate {name} --min-votes {mv}")
        out.print(f"[bold]5. calibrate[/] {name}: gold counts {summ.get('gold', {})}; {_betas(summ)}")
        target = folder / f"export-{name}-st"
        try:
            ex = export(store, name, "st", target, min_confidence=0.9, overwrite=True)  # a re-run replaces its own
            out.print(f"[bold]6. export[/] {name}: {ex.get('rows', ex)} triplets -> {target}")
        except CondsimError as exc:  # e.g. nothing above the confidence threshold
            out.print(f"[bold]6. export[/] {name}: skipped ({exc})")
        html = folder / f"report-{name}.html"
        write_report(store, name, html=str(html), md=str(folder / f"report-{name}.md"),
                     command=f"condsim-annot report {name} --html {html}")
        out.print(f"[bold]7. report[/] {html}")


@click.command()
@click.option("--dir", "folder", default="condsim-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo writes its corpus, store (unless --db is given), exports and report.")
@click.option("--budget", default=120, show_default=True, help="Triplets to propose per criterion.")
@click.option("--methods", default="embedding,bm25", show_default=True,
              help="Proposer methods (LLM methods need an endpoint).")
@click.option("--silver/--no-silver", default=True, show_default=True,
              help="Vote the proposals with CHAMP's own concept annotations (a silver annotator), "
                   "so calibration has data.")
@click.option("--simulated/--no-simulated", default=True, show_default=True,
              help="Also add simulated annotators (CHAMP's answers with 10%, 30% and 100% of them random), "
                   "so the report has agreement to measure and calibration has noise to find.")
@click.option("--tui/--no-tui", "open_tui", default=None,
              help="Open the labeling TUI at the end (default: when run in a terminal).")
@click.option("--annotator", default="you", show_default=True, help="Your annotator name in the TUI.")
@pass_ctx
def demo(ctx: Ctx, folder: str, budget: int, methods: str, silver: bool, simulated: bool, open_tui: bool | None,
         annotator: str) -> None:
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
    from condsim_annot.db import redact
    from condsim_annot.demo import DEMO_CRITERIA, SIMULATED_CROWD

    _quiet_library_progress_bars()
    t0 = time.perf_counter()
    folder_p = Path(folder)
    folder_p.mkdir(parents=True, exist_ok=True)
    if ctx.db is None:
        ctx.db = str(folder_p / "condsim.db")
    store = ctx.store(create=True)
    out.rule("[bold]condsim-annot demo")
    out.print(f"store: {redact(store.url)}")
    _ingest_and_propose(store, folder_p, budget, methods)
    if silver:
        _silver_votes(store, simulated)
        _calibrate_export_report(store, folder_p, simulated)
    # the silver crowd already voted every triplet: your votes come on top of theirs
    crowd = (1 + len(SIMULATED_CROWD) * simulated) if silver else 0
    overlap = crowd + 1
    out.print(f"done in {time.perf_counter() - t0:.0f}s. Next: `condsim-annot --db {ctx.db} status`")
    if open_tui is None:
        open_tui = sys.stdin.isatty() and sys.stdout.isatty()
    if open_tui:
        from condsim_annot.tui.app import run_tui  # Textual: loaded only when the TUI opens

        run_tui(store.url, annotator=annotator, criterion=DEMO_CRITERIA[0]["name"], overlap=overlap)
    else:
        out.print(f"label yourself: condsim-annot --db {ctx.db} tui --annotator {annotator} --criterion same-technique"
                  f" --overlap {overlap}")


def register(main: click.Group) -> None:
    main.add_command(demo)
