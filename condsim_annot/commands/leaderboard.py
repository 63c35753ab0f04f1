"""``condsim-annot leaderboard``: accuracy of each proposer method and LM judge on gold triplets."""

from __future__ import annotations

import json

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.commands._common import fmt


@click.command("leaderboard")
@click.argument("criterion")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% CIs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def leaderboard_cmd(ctx: Ctx, criterion, bootstrap, as_json):
    """Accuracy of each proposer method and each LM judge on CRITERION's gold triplets.

    \b
    Examples:
      condsim-annot leaderboard proof-strategy
      condsim-annot leaderboard proof-strategy --json
    """
    from rich.table import Table

    from condsim_annot.exporters.leaderboard import leaderboard

    lb = leaderboard(ctx.store(), criterion, bootstrap=bootstrap)
    if as_json:
        click.echo(json.dumps(lb, indent=2, sort_keys=True))
        return
    out.print(f"[bold]{lb['criterion']}[/]: {lb['n_gold']} gold triplets (calibration run {lb['calibration_run']})")

    def ci(r):
        return f"[{fmt(r['ci'][0], 2)}, {fmt(r['ci'][1], 2)}]" if r["ci"][0] is not None else "-"

    t = Table("method", "accuracy (all)", "95% CI", "n", "audit acc.", "audit n", title="proposer methods")
    for r in lb["methods"]:
        au = r["audit"]
        t.add_row(r["method"], fmt(r["accuracy"]), ci(r), str(r["n"]), fmt(au["accuracy"]), str(au["n"]))
    if lb["methods"]:
        out.print(t)
    else:
        out.print("no method margins stored for the gold triplets (they come from `condsim-annot propose`)")
    labels = lb.get("labels") or {}
    if labels:
        out.print(f"all = {labels['accuracy']}\naudit = {labels['audit']}")
    _print_trained(lb.get("trained") or [], labels.get("trained", ""))
    t = Table("annotator", "kind", "accuracy", "95% CI", "n", "share of votes", "vs human answer",
              title="LM judges and humans vs gold")
    for r in lb["judges"] + lb["humans"]:
        vh = r.get("vs_human")
        t.add_row(r["annotator"], r["kind"], fmt(r["accuracy"]), ci(r), str(r["n"]), fmt(r["share_of_votes"], 2),
                  f"{fmt(vh['accuracy'])} (n={vh['n']})" if vh and vh["n"] else "-")
    out.print(t)
    if lb["judges"] + lb["humans"]:
        out.print("annotators vs gold: optimistic, their own votes entered the gold (rank them by it, do not quote "
                  "it as their accuracy; `calibrate` shows each one's fitted reliability)")


def _print_trained(trained: list, label: str) -> None:
    """Each stored trained model's held-out report (the number to compare adapters and fine-tunes by)."""
    from rich.table import Table

    for m in trained:
        t = Table("method", "accuracy (all)", "95% CI", "n", "audit acc.", "audit n",
                  title=f"trained model #{m['model_id']} ({m['kind']}, calibration run {m['calibration_run']}): "
                        f"{label}; {m['plan']}")
        for r in m["methods"]:
            a, u = r["all"], r["audit"]
            ci_all = f"[{fmt(a['ci'][0], 2)}, {fmt(a['ci'][1], 2)}]" if a["n"] else "-"
            t.add_row(r["method"], fmt(a["accuracy"]), ci_all, str(a["n"]), fmt(u["accuracy"]), str(u["n"]))
        out.print(t)


def register(main: click.Group) -> None:
    main.add_command(leaderboard_cmd)
