"""``condsim-annot export``: gold triplets to JSONL, Parquet, Hugging Face datasets or sentence-transformers."""

from __future__ import annotations

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.commands._common import command_line


@click.command("export")
@click.argument("criterion")
@click.argument("out_path", metavar="OUT")
@click.option("--format", "fmt", type=click.Choice(["st", "jsonl", "parquet", "hf", "pairs"]), default="jsonl",
              show_default=True,
              help="st: sentence-transformers columns anchor/positive/negative (datasets folder); hf: datasets folder "
                   "with all columns; jsonl/parquet: one file; pairs: graded pair scores with CIs.")
@click.option("--min-confidence", type=float, default=0.9, show_default=True,
              help="Only labels with P(label) at least this.")
@click.option("--include-derived", is_flag=True,
              help="Also export labels inferred through the scores for unvoted triplets (flagged derived).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing OUT file, or a folder holding an earlier export (never other files).")
@pass_ctx
def export_cmd(ctx: Ctx, criterion, out_path, fmt, min_confidence, include_derived, overwrite):
    """Export CRITERION's gold triplets (latest calibration run) to OUT.

    Columns: anchor, positive, negative, criterion, confidence, n_votes, annotators,
    method provenance (method, strategy, per-method margins).  OUT is a folder
    (st, hf, or a default file name inside it) or a file ending in .jsonl/.parquet.
    An existing file or non-empty folder is refused unless --overwrite; the export is
    written beside OUT and renamed into place, and a folder with files an export did not
    write is never replaced.

    \b
    Examples:
      condsim-annot export proof-strategy --format st --min-confidence 0.9 out/st
      condsim-annot export proof-strategy --format jsonl gold.jsonl
      condsim-annot export proof-strategy --format pairs pairs.parquet
      condsim-annot export proof-strategy --format st out/st --overwrite
    """
    from condsim_annot.exporters.export import export

    info = export(ctx.store(), criterion, fmt, out_path, min_confidence=min_confidence, include_derived=include_derived,
                  command=command_line(), overwrite=overwrite)
    out.print(f"exported {info['rows']} rows ({fmt}) of [bold]{criterion}[/] to {info['path']}"
              + (f" ({info['derived']} derived)" if info["derived"] else ""))


def register(main: click.Group) -> None:
    main.add_command(export_cmd)
