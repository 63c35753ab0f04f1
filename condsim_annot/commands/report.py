"""``condsim-annot report``: the agreement report of a criterion's latest calibration run."""

from __future__ import annotations

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.commands._common import command_line


@click.command("report")
@click.argument("criterion")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), help="Self-contained HTML report (plots inlined)."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Machine-readable report (stable keys).")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Markdown summary.")
@pass_ctx
def report_cmd(ctx: Ctx, criterion, html_path, json_path, md_path):
    """Agreement report of CRITERION's latest calibration run.

    Plots: score distribution, annotator reliability, agreement matrix, LM-judge
    reliability diagram, votes over time, position bias; tables of annotators and
    ill-defined triplets; the exact command and data version that made it.

    \b
    Examples:
      condsim-annot report proof-strategy --html report.html
      condsim-annot report proof-strategy --html r.html --json r.json --md r.md
    """
    from condsim_annot.errors import CondsimError
    from condsim_annot.exporters.report import write_report

    if not (html_path or json_path or md_path):
        raise CondsimError("give at least one of --html FILE, --json FILE, --md FILE")
    paths = write_report(
        ctx.store(), criterion, html=html_path, json_path=json_path, md=md_path, command=command_line()
    )
    for p in paths:
        out.print(f"wrote {p}")


def register(main: click.Group) -> None:
    main.add_command(report_cmd)
