"""CLI of the calibration stage: calibrate, report, export, leaderboard, views, votes import."""

from __future__ import annotations

import json
import shlex

import click

from condsim_annot.cli import Ctx, out, pass_ctx


def _command_line() -> str:
    """The command as typed (options at non-default values; the store URL left out: it may hold a password)."""
    ctx = click.get_current_context()
    parts = ["condsim-annot"] + ctx.command_path.split()[1:]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            parts += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v]) if x is not None]
        elif v is not None and v != p.default and v is not False:
            flag = max(p.opts, key=len)
            parts += [flag] if v is True else [flag, str(v)]
    return " ".join(shlex.quote(x) for x in parts)


def _fmt(x, nd=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


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
        f"{k} {_fmt(v['value'])}" + (f" [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]" if v["ci"][0] is not None else "")
        for k, v in al.items() if v["value"] is not None)
    out.print("Krippendorff alpha (95% CI): " + (alpha_txt or "(needs two annotators on a triplet)"))
    t = Table("annotator", "kind", "beta", "votes", "LOO agree", "gold agree", "attention", "pos. bias", title="annotators")
    for a in s["annotators"]:
        att = f"{a['attention_accuracy']:.2f} of {a['attention_n']}" if a["attention_n"] else "-"
        t.add_row(("[red]! [/]" if a["flagged"] else "") + a["name"], a["kind"], _fmt(a["beta"], 2), str(a["n_votes"]),
                  _fmt(a["loo_agreement"], 2), _fmt(a["gold_agreement"], 2), att, _fmt(a["position_bias"], 2))
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


def register(main: click.Group) -> None:
    @main.command("calibrate")
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
                      command=_command_line())
        if as_json:
            doc = {k: v for k, v in s.items() if k != "labels"}
            doc["pair_scores"] = [{k: p[k] for k in ("anchor", "candidate", "score", "stderr", "component", "n_votes")}
                                  for p in s["pair_scores"]]
            click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
        else:
            _print_summary(s)

    @main.command("report")
    @click.argument("criterion")
    @click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Self-contained HTML report (plots inlined).")
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
        paths = write_report(ctx.store(), criterion, html=html_path, json_path=json_path, md=md_path, command=_command_line())
        for p in paths:
            out.print(f"wrote {p}")

    @main.command("export")
    @click.argument("criterion")
    @click.argument("out_path", metavar="OUT")
    @click.option("--format", "fmt", type=click.Choice(["st", "jsonl", "parquet", "hf", "pairs"]), default="jsonl", show_default=True,
                  help="st: sentence-transformers columns anchor/positive/negative (datasets folder); hf: datasets folder "
                       "with all columns; jsonl/parquet: one file; pairs: graded pair scores with CIs.")
    @click.option("--min-confidence", type=float, default=0.9, show_default=True, help="Only labels with P(label) at least this.")
    @click.option("--include-derived", is_flag=True, help="Also export labels inferred through the scores for unvoted triplets (flagged derived).")
    @pass_ctx
    def export_cmd(ctx: Ctx, criterion, out_path, fmt, min_confidence, include_derived):
        """Export CRITERION's gold triplets (latest calibration run) to OUT.

        Columns: anchor, positive, negative, criterion, confidence, n_votes, annotators,
        method provenance (method, strategy, per-method margins).  OUT is a folder
        (st, hf, or a default file name inside it) or a file ending in .jsonl/.parquet.

        \b
        Examples:
          condsim-annot export proof-strategy --format st --min-confidence 0.9 out/st
          condsim-annot export proof-strategy --format jsonl gold.jsonl
          condsim-annot export proof-strategy --format pairs pairs.parquet
        """
        from condsim_annot.exporters.export import export

        info = export(ctx.store(), criterion, fmt, out_path, min_confidence=min_confidence, include_derived=include_derived,
                      command=_command_line())
        out.print(f"exported {info['rows']} rows ({fmt}) of [bold]{criterion}[/] to {info['path']}"
                  + (f" ({info['derived']} derived)" if info["derived"] else ""))

    @main.command("leaderboard")
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
            return f"[{_fmt(r['ci'][0], 2)}, {_fmt(r['ci'][1], 2)}]" if r["ci"][0] is not None else "-"

        t = Table("method", "accuracy", "95% CI", "n", "audit acc.", "audit n", title="proposer methods")
        for r in lb["methods"]:
            t.add_row(r["method"], _fmt(r["accuracy"]), ci(r), str(r["n"]), _fmt(r["audit"]["accuracy"]), str(r["audit"]["n"]))
        if lb["methods"]:
            out.print(t)
        else:
            out.print("no method margins stored for the gold triplets (they come from `condsim-annot propose`)")
        t = Table("annotator", "kind", "accuracy", "95% CI", "n", "share of votes", "vs human answer",
                  title="LM judges and humans vs gold")
        for r in lb["judges"] + lb["humans"]:
            vh = r.get("vs_human")
            t.add_row(r["annotator"], r["kind"], _fmt(r["accuracy"]), ci(r), str(r["n"]), _fmt(r["share_of_votes"], 2),
                      f"{_fmt(vh['accuracy'])} (n={vh['n']})" if vh and vh["n"] else "-")
        out.print(t)

    @main.command("views")
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

    votes = main.commands.get("votes")
    if votes is None:
        @main.group("votes")
        def votes():
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
