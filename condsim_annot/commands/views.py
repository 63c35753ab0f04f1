"""``condsim-annot views``: maps of the corpus under one or more criteria, and method agreement."""

from __future__ import annotations

import click

from condsim_annot.cli import Ctx, out, pass_ctx


@click.command("views")
@click.argument("criteria", nargs=-1, required=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), required=True, help="Output HTML file (self-contained).")
@click.option("--color-by", default=None, help="Document metadata field to colour by (default: clusters).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write coordinates and scores as JSON.")
@pass_ctx
def views_cmd(ctx: Ctx, criteria, html_path, color_by, json_path):
    """2-D maps of the corpus under one or two criteria, and method agreement.

    Each criterion's map: MDS of the calibrated pair scores (or PCA of criterion
    embeddings when cached), coloured by a metadata field or clusters, with the
    silhouette score.  Where method margins exist: CKA and Jaccard@10 between methods.

    \b
    Examples:
      condsim-annot views same-technique same-topic --html views.html --color-by category
    """
    from condsim_annot.exporters.views import write_views

    p = write_views(ctx.store(), list(criteria), html=html_path, color_by=color_by, json_path=json_path)
    out.print(f"wrote {p}")


def register(main: click.Group) -> None:
    main.add_command(views_cmd)
