"""``condsim-annot calibrate``: fit the model to a criterion's votes, store pair scores and gold labels."""

from __future__ import annotations

import json

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.commands._common import command_line, fmt


def _print_summary(s: dict) -> None:
    from rich.table import Table

    nv = s["n_votes"]
    out.print(f"criterion [bold]{s['criterion']}[/] (v{s['criterion_version']}), calibration run {s['run_id']}: "
              f"{nv['fitted']} fitted votes ({nv['luce_choices']} best-of-k choices, {nv['tie']} ties), "
              f"{nv['cant_tell']} can't tell, {nv['skip']} skipped; {s['n_items']} pair items in "
              f"{s['components']['count']} component(s) (largest {s['components']['largest']})")
    g = s["gold"]
    out.print(f"labels: [bold green]{g['gold']} gold[/], {g['uncertain']} uncertain, {g['contested']} contested"
              + (f", {g['derived']} derived" if g["derived"] else "")
              + f"  (tau={s['params']['tau']}, min votes={s['params']['min_votes']}); tie parameter nu={s['tie_parameter']:.3f}")
    al = s["alpha"]
    alpha_txt = ", ".join(
        f"{k} {fmt(v['value'])}" + (f" [{fmt(v['ci'][0])}, {fmt(v['ci'][1])}]" if v["ci"][0] is not None else "")
        for k, v in al.items() if v["value"] is not None)
    out.print("Krippendorff alpha (95% CI): " + (alpha_txt or "(needs two annotators on a triplet)"))
    t = Table("annotator", "kind", "beta", "votes", "LOO agree", "gold agree", "attention", "pos. bias", title="annotators")
    for a in s["annotators"]:
        att = f"{a['attention_accuracy']:.2f} of {a['attention_n']}" if a["attention_n"] else "-"
        t.add_row(("[red]! [/]" if a["flagged"] else "") + a["name"], a["kind"], fmt(a["beta"], 2), str(a["n_votes"]),
                  fmt(a["loo_agreement"], 2), fmt(a["gold_agreement"], 2), att, fmt(a["position_bias"], 2))
    out.print(t)
    for f in s["attention"]["failed"]:
        out.print(f"[red]attention checks failed[/]: {f['name']} ({f['attention_accuracy']:.0%} of {f['attention_n']}); "
                  f"down-weighted to beta={f['beta']:.2f}")
    if s["ill_defined"]:
        out.print(f"[yellow]{len(s['ill_defined'])} triplet(s) look ill-defined[/] (mostly \"can't tell\"); "
                  f"criterion can't-tell rate {s['cant_tell_rate']:.1%}")
    if s["components"]["count"] > 1:
        out.print(f"scores compare only inside a component: {s['components']['count']} components; "
                  "`condsim-annot propose` can add bridge triplets to join them")


@click.command("calibrate")
@click.argument("criterion")
@click.option("--tau", type=float, default=0.9, show_default=True, help="Gold when P(s(a,x) > s(a,y)) >= tau.")
@click.option("--min-votes", type=int, default=2, show_default=True, help="Gold needs at least this many fitted votes.")
@click.option("--prior", type=float, default=2.0, show_default=True,
              help="Scale of the Gaussian prior on pair scores (0 = off: plain maximum likelihood).")
@click.option("--beta-prior", type=float, default=1.0, show_default=True,
              help="Scale of the prior on log beta (0 = every annotator beta 1).")
@click.option("--bootstrap", type=int, default=0, show_default=True, help="Bootstrap refits over votes for the uncertainty (0 = Laplace).")
@click.option("--derive", is_flag=True, help="Also label stored triplets nobody voted on from the scores (status derived).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (stable keys), with every pair score.")
@pass_ctx
def calibrate_cmd(ctx: Ctx, criterion, tau, min_votes, prior, beta_prior, bootstrap, derive, seed, as_json):
    """Fit the Bradley-Terry model to CRITERION's votes; store pair scores and gold labels.

    Votes: first/second/tie enter the fit (ties by Davidson's model), can't-tell is
    counted, skips ignored; best-of-k answers count as one Luce choice; each
    annotator gets a discrimination beta (noisy = small), measured against the
    scores the other annotators' votes imply, so nobody can look reliable by
    voting alone.  A new calibration run is stored every time; exports, reports and the leaderboard use the latest.

    \b
    Examples:
      condsim-annot calibrate proof-strategy
      condsim-annot calibrate proof-strategy --tau 0.95 --min-votes 3 --bootstrap 200
      condsim-annot calibrate proof-strategy --json | jq '.gold'
    """
    from condsim_annot.calibrate.pipeline import calibrate

    s = calibrate(ctx.store(), criterion, tau=tau, min_votes=min_votes, prior=prior,
                  beta_prior=beta_prior if beta_prior > 0 else None, bootstrap=bootstrap, derive=derive, seed=seed,
                  command=command_line())
    if as_json:
        doc = {k: v for k, v in s.items() if k != "labels"}
        doc["pair_scores"] = [{k: p[k] for k in ("anchor", "candidate", "score", "stderr", "component", "n_votes")}
                              for p in s["pair_scores"]]
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        _print_summary(s)


def register(main: click.Group) -> None:
    main.add_command(calibrate_cmd)
