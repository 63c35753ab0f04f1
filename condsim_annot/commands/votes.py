"""``condsim-annot votes import``: votes made elsewhere (CSV), all or nothing."""

from __future__ import annotations

import json

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from condsim_annot.cli import Ctx, console, out, pass_ctx


@click.group("votes")
def votes() -> None:
    """Votes made elsewhere.

    \b
    Example:
      condsim-annot votes import votes.csv
    """


@votes.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
@pass_ctx
def votes_import_cmd(ctx: Ctx, file: str, as_json: bool) -> None:
    """Import votes from a CSV file (all or nothing; source "import").

    Columns: criterion, anchor, a, b, annotator, choice (a|b|tie|cant_tell|skip), and
    optionally kind (human|llm), latency_ms, confidence, rationale, group_id.
    anchor/a/b are document ids of the ingested files; a was shown first.
    The whole file is checked and staged first without locking the store (the first
    bad row is named file:line: field and nothing is written), then written as an
    invisible batch in short transactions and made visible in one short step: an
    annotator in the TUI waits for one such step at most, never for the whole file;
    an interrupted import leaves nothing.  Importing the same file again adds nothing; an annotator voting
    twice on a triplet in the file: the last line counts (a warning says how often).

    \b
    Example:
      printf 'criterion,anchor,a,b,annotator,choice\\nproof-strategy,p1,p2,p3,ann,a\\n' > v.csv
      condsim-annot votes import v.csv
    """
    from condsim_annot.calibrate.votes_import import import_votes  # the store stack: loaded when the command runs

    store = ctx.store()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                label = {"validate": "checking " + click.format_filename(file), "publish": "writing votes"}.get(
                    phase, "publishing")
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        r = import_votes(store, file, progress=progress)
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2, sort_keys=True))
        return
    out.print(f"read {r.read} rows: added {r.added} votes, {r.unchanged} already there, "
              f"{r.triplets_created} new triplets", highlight=False)
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


def register(main: click.Group) -> None:
    main.add_command(votes)
