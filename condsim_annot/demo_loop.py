"""The demo's whole loop as a library call (``condsim-annot demo`` prints what this reports).

ingest -> criteria -> propose -> silver (and simulated) votes -> calibrate -> export -> report, on
the bundled CHAMP corpus, through the same public functions the CLI commands use: the demo doubles
as a smoke test of a fresh install.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .calibrate.pipeline import calibrate
from .criteria import load_criteria_file
from .db import Store
from .demo import DEMO_CRITERIA, SIMULATED_CROWD, add_silver_votes, write_demo_files
from .errors import CondsimError
from .exporters.export import export
from .exporters.report import write_report
from .ingest import ingest
from .propose.select import propose

Echo = Callable[[str], object]


def _betas(summ: dict[str, Any]) -> str:
    """One line on what calibration learned about each annotator (beta: small = noisy)."""
    anns = summ.get("annotators") or []
    parts = [f"{a.get('name')} {a.get('beta', float('nan')):.2f}" for a in anns if a.get("beta") is not None]
    return "annotator beta: " + ", ".join(parts) if parts else ""


def ingest_and_propose(store: Store, folder: Path, budget: int, methods: str, echo: Echo) -> None:
    """Steps 1-3: the corpus and criteria files written as a user would, ingested, proposed."""
    corpus_file, crit_file = write_demo_files(folder)
    res = ingest(store, [corpus_file], corpus="champ")
    echo(f"[bold]1. ingest[/] {corpus_file}: {res.added} added, {res.unchanged} already there")
    crits = load_criteria_file(store, crit_file, update_existing=True)
    echo(f"[bold]2. criteria[/] {', '.join(c.name for c in crits)} (from {crit_file})")
    for c in DEMO_CRITERIA:
        summ = propose(store, c["name"], methods=methods, budget=budget)
        echo(f"[bold]3. propose[/] {c['name']}: {summ.added} triplets added, total {summ.total}")


def silver_votes(store: Store, simulated: bool, echo: Echo) -> None:
    """Step 4: CHAMP's own annotations as a silver annotator (plus the simulated crowd)."""
    for c in DEMO_CRITERIA:
        n = add_silver_votes(store, c["name"])
        msg = f"{n} silver votes from CHAMP's annotations (annotator champ-silver)"
        if simulated:
            for who, noise in SIMULATED_CROWD:
                add_silver_votes(store, c["name"], who, noise=noise)
            msg += f" + simulated {', '.join(f'{w} ({int(nz * 100)}% random)' for w, nz in SIMULATED_CROWD)}"
        echo(f"[bold]4. votes[/] {c['name']}: {msg}")


def calibrate_export_report(store: Store, folder: Path, simulated: bool, echo: Echo) -> None:
    """Steps 5-7 per criterion: calibrate, export gold triplets for sentence-transformers, write the report."""
    for c in DEMO_CRITERIA:
        name = c["name"]
        mv = 2 if simulated else 1  # with one silver annotator a single vote per triplet is all there is
        summ = calibrate(store, name, min_votes=mv, command=f"condsim-annot calibrate {name} --min-votes {mv}")
        echo(f"[bold]5. calibrate[/] {name}: gold counts {summ.get('gold', {})}; {_betas(summ)}")
        target = folder / f"export-{name}-st"
        try:
            ex = export(store, name, "st", target, min_confidence=0.9, overwrite=True)  # a re-run replaces its own
            echo(f"[bold]6. export[/] {name}: {ex.get('rows', ex)} triplets -> {target}")
        except CondsimError as exc:  # e.g. nothing above the confidence threshold
            echo(f"[bold]6. export[/] {name}: skipped ({exc})")
        html = folder / f"report-{name}.html"
        write_report(store, name, html=str(html), md=str(folder / f"report-{name}.md"),
                     command=f"condsim-annot report {name} --html {html}")
        echo(f"[bold]7. report[/] {html}")


def run_demo(store: Store, folder: Path, *, budget: int, methods: str, silver: bool, simulated: bool,
             echo: Echo) -> int:
    """The whole loop; returns the overlap a human annotator needs to vote on top of the silver crowd."""
    ingest_and_propose(store, folder, budget, methods, echo)
    if silver:
        silver_votes(store, simulated, echo)
        calibrate_export_report(store, folder, simulated, echo)
    crowd = (1 + len(SIMULATED_CROWD) * simulated) if silver else 0
    return crowd + 1
