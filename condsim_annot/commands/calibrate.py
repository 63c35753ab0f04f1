"""``condsim-annot calibrate``: fit the model to a criterion's votes, store pair scores and gold labels."""

from __future__ import annotations

import json

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.commands._common import command_line, fmt


def _print_summary(s: dict) -> None:
    from rich.table import Table

    nv = s["n_votes"]
    out.print(
        f"criterion [bold]{s['criterion']}[/] (v{s['criterion_version']}), calibration run {s['run_id']}: "
        f"{nv['fitted']} fitted votes ({nv['luce_choices']} best-of-k choices, {nv['tie']} ties), "
        f"{nv['cant_tell']} can't tell, {nv['skip']} skipped; {s['n_items']} pair items in "
        f"{s['components']['count']} component(s) (largest {s['components']['largest']})"
    )
    g = s["gold"]
    out.print(
        f"labels: [bold green]{g['gold']} gold[/], {g['uncertain']} uncertain, {g['contested']} contested"
        + (f", {g['derived']} derived" if g["derived"] else "")
        + f"  (tau={s['params']['tau']}, min votes={s['params']['min_votes']}); "
        f"tie parameter nu={s['tie_parameter']:.3f}"
    )
    al = s["alpha"]
    alpha_txt = ", ".join(
        f"{k} {fmt(v['value'])}" + (f" [{fmt(v['ci'][0])}, {fmt(v['ci'][1])}]" if v["ci"][0] is not None else "")
        for k, v in al.items()
        if v["value"] is not None
    )
    out.print("Krippendorff alpha (95% CI): " + (alpha_txt or "(needs two annotators on a triplet)"))
    t = Table(
        "annotator", "kind", "beta", "votes", "LOO agree", "gold agree", "attention", "pos. bias", title="annotators"
    )
    for a in s["annotators"]:
        att = f"{a['attention_accuracy']:.2f} of {a['attention_n']}" if a["attention_n"] else "-"
        t.add_row(
            ("[red]! [/]" if a["flagged"] else "") + a["name"],
            a["kind"],
            fmt(a["beta"], 2),
            str(a["n_votes"]),
            fmt(a["loo_agreement"], 2),
            fmt(a["gold_agreement"], 2),
            att,
            fmt(a["position_bias"], 2),
        )
    out.print(t)
    for f in s["attention"]["failed"]:
        out.print(
            f"[red]attention checks failed[/]: {f['name']} ({f['attention_accuracy']:.0%} of {f['attention_n']}); "
            f"down-weighted to beta={f['beta']:.2f}"
        )
    if s["ill_defined"]:
        out.print(
            f'[yellow]{len(s["ill_defined"])} triplet(s) look ill-defined[/] (mostly "can\'t tell"); '
            f"criterion can't-tell rate {s['cant_tell_rate']:.1%}"
        )
    _print_model(s)
    if s["components"]["count"] > 1 and not s.get("model", {}).get("global_scale"):
        out.print(
            f"scores compare only inside a component: {s['components']['count']} components; "
            "`condsim-annot propose` can add bridge triplets to join them"
        )


def _print_model(s: dict) -> None:
    """The prior's feature weights and the measured calibration."""
    m = s.get("model") or {}
    if m.get("name") == "triplet":
        ws = ", ".join(f"{w['method']} {w['w']:+.2f} (sd {w['sd']:.2f})" for w in m["feature_weights"])
        out.print(
            f"model: pair scores on one scale, prior sd tau={m['prior_scale']:.2f} (empirical Bayes unless "
            "--prior); what each method is worth under this criterion, learnt from the votes: "
            f"{ws or '(no method scores stored)'}"
        )
    cal = s.get("calibration") or {}
    v = cal.get("votes")
    if v and v.get("ece") is not None:
        out.print(
            f"calibration (each held-out vote predicted from the others, {v['n']} votes): "
            f"ECE {v['ece']:.3f}, Brier {v['brier']:.3f}"
        )
    ga = cal.get("gold_accuracy") or {}
    if ga.get("expected") is not None:
        txt = f"gold labels' expected accuracy {ga['expected']:.3f}"
        if ga.get("reference_n"):
            txt += (
                f"; on {ga['reference_n']} with a reference answer {ga['reference_correct']} right, "
                f"95% lower bound {ga['lower_95']:.3f} (Clopper-Pearson; {ga['reference']})"
            )
        out.print(txt)


@click.command("calibrate")
@click.argument("criterion")
@click.option("--tau", type=float, default=0.9, show_default=True, help="Gold when P(s(a,x) > s(a,y)) >= tau.")
@click.option("--min-votes", type=int, default=2, show_default=True, help="Gold needs at least this many fitted votes.")
@click.option(
    "--prior",
    type=float,
    default=None,
    help="Sd of the pair scores around their prior (default: learnt from the votes, empirical Bayes; "
    "legacy model: 2; 0 with --model legacy = plain maximum likelihood).",
)
@click.option(
    "--model",
    "model",
    type=click.Choice(["triplet", "legacy"]),
    default="triplet",
    show_default=True,
    help="triplet: feature prior + exact triplet probabilities; legacy: the previous Bradley-Terry fit.",
)
@click.option(
    "--target-accuracy",
    type=float,
    default=None,
    help="Choose the gold threshold so the gold labels' expected accuracy reaches this (e.g. 0.95); overrides --tau.",
)
@click.option(
    "--beta-prior",
    type=float,
    default=1.0,
    show_default=True,
    help="Scale of the prior on log beta (0 = every annotator beta 1).",
)
@click.option(
    "--bootstrap",
    type=int,
    default=0,
    show_default=True,
    help="Bootstrap refits over votes for the uncertainty (--model legacy only; 0 = Laplace).",
)
@click.option(
    "--derive", is_flag=True, help="Also label stored triplets nobody voted on from the scores (status derived)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (stable keys), with every pair score.")
@pass_ctx
def calibrate_cmd(
    ctx: Ctx, criterion, tau, min_votes, prior, model, target_accuracy, beta_prior, bootstrap, derive, seed, as_json
):
    """Fit the calibration model to CRITERION's votes; store pair scores and gold labels.

    Votes: first/second/tie enter the fit (ties by Davidson's model, each annotator's own
    tie propensity), can't-tell is counted, skips ignored.  Each pair's score is
    w . (the proposer methods' scores) + its own deviation: w is learnt from the votes, so
    every triplet is on one scale and unvoted pairs get calibrated probabilities.  Each
    annotator gets a discrimination beta (noisy = small) measured by how well the others'
    votes predict theirs, so nobody can look reliable by voting alone.  Each triplet's
    probability is integrated exactly; calibration is measured on held-out votes (ECE).
    A new calibration run is stored every time; exports, reports and the leaderboard use the latest.

    \b
    Examples:
      condsim-annot calibrate proof-strategy
      condsim-annot calibrate proof-strategy --target-accuracy 0.95
      condsim-annot calibrate proof-strategy --model legacy --tau 0.95 --bootstrap 200
      condsim-annot calibrate proof-strategy --json | jq '.gold'
    """
    from condsim_annot.calibrate.pipeline import calibrate

    s = calibrate(
        ctx.store(),
        criterion,
        tau=tau,
        min_votes=min_votes,
        prior=prior,
        beta_prior=beta_prior if beta_prior > 0 else None,
        bootstrap=bootstrap,
        derive=derive,
        seed=seed,
        command=command_line(),
        model=model,
        target_accuracy=target_accuracy,
    )
    if as_json:
        doc = {k: v for k, v in s.items() if k != "labels"}
        doc["pair_scores"] = [
            {k: p[k] for k in ("anchor", "candidate", "score", "stderr", "component", "n_votes")}
            for p in s["pair_scores"]
        ]
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        _print_summary(s)


def register(main: click.Group) -> None:
    main.add_command(calibrate_cmd)
