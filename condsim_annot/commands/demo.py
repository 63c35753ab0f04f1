"""``condsim-annot demo``: the whole loop, offline, on the bundled CHAMP corpus.

A thin command over :func:`condsim_annot.demo_loop.run_demo` (ingest -> criteria -> propose ->
silver votes -> calibrate -> export -> report), then the TUI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from condsim_annot.cli import Ctx, out, pass_ctx


def _quiet_library_progress_bars() -> None:
    """Our own steps print one line each; the libraries' per-file bars are noise here."""
    import datasets  # heavy: only the demo and the exports need it
    from transformers.utils import logging as tlog

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    datasets.disable_progress_bars()
    tlog.disable_progress_bar()


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
    # the library loop pulls in SQLAlchemy, numpy and the models: imported when the demo runs, not at CLI start
    from condsim_annot.db import redact
    from condsim_annot.demo import DEMO_CRITERIA
    from condsim_annot.demo_loop import run_demo

    _quiet_library_progress_bars()
    t0 = time.perf_counter()
    folder_p = Path(folder)
    folder_p.mkdir(parents=True, exist_ok=True)
    if ctx.db is None:
        ctx.db = str(folder_p / "condsim.db")
    store = ctx.store(create=True)
    out.rule("[bold]condsim-annot demo")
    out.print(f"store: {redact(store.url)}")
    # the silver crowd already voted every triplet: your votes come on top of theirs
    overlap = run_demo(store, folder_p, budget=budget, methods=methods, silver=silver, simulated=simulated,
                       echo=out.print)
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
