"""``condsim-annot votes import``: votes made elsewhere (CSV), added in one transaction."""

from __future__ import annotations

import json

import click

from condsim_annot.cli import Ctx, out, pass_ctx


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
def votes_import_cmd(ctx: Ctx, file, as_json):
    """Import votes from a CSV file (one transaction; source "import").

    Columns: criterion, anchor, a, b, annotator, choice (a|b|tie|cant_tell|skip), and
    optionally kind (human|llm), latency_ms, confidence, rationale, group_id.
    anchor/a/b are document ids of the ingested files; a was shown first.
    Importing the same file again adds nothing.

    \b
    Example:
      condsim-annot votes import votes.csv
      printf 'criterion,anchor,a,b,annotator,choice\\nproof-strategy,p1,p2,p3,ann,a\\n' > v.csv
    """
    from condsim_annot.calibrate.votes_import import import_votes

    r = import_votes(ctx.store(), file)
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2, sort_keys=True))
    else:
        out.print(f"read {r.read} rows: added {r.added} votes, {r.unchanged} already there, "
                  f"{r.triplets_created} new triplets")


def register(main: click.Group) -> None:
    main.add_command(votes)
