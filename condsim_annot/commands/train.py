"""``condsim-annot train``: a criterion-specific similarity from gold triplets, measured held-out."""

from __future__ import annotations

import json
from typing import Any

import click

from condsim_annot.cli import Ctx, console, out, pass_ctx


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _acc(r: dict) -> tuple[str, str, str]:
    if not r["n"]:
        return "-", "-", "0"
    return _f(r["accuracy"]), f"[{_f(r['ci'][0], 2)}, {_f(r['ci'][1], 2)}]", str(r["n"])


def a_diff(r: dict) -> str:
    """A paired difference as '+0.057 [+0.01, +0.11] (n=366)'."""
    return f"{r['diff']:+.3f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] (n={r['n']})"


def print_report(rep: dict) -> None:
    """The held-out table, each number's meaning spelled out (the proposer-selected gold is biased)."""
    from rich.table import Table

    m = rep["metrics"]
    out.print(
        f"[bold]{rep['criterion']}[/] v{rep['criterion_version']}: {m['n_gold']} gold triplets from calibration run "
        f"{rep['calibration_run']}; {m['plan']}; {m['n_held_out']} held out ({m['n_audit_held_out']} of them audit)"
    )
    t = Table(
        "method",
        "accuracy (all)",
        "95% CI",
        "n",
        "accuracy (audit)",
        "95% CI",
        "n",
        "CPU s",
        title="held-out triplet accuracy (anchors never seen in training; CIs resample anchors)",
    )
    for r in m["methods"]:
        cpu = m["cpu_seconds"].get(r["method"])
        t.add_row(r["method"], *_acc(r["all"]), *_acc(r["audit"]), _f(cpu, 2) if cpu is not None else "-")
    out.print(t)
    out.print(f"all   = {m['labels']['all']}\naudit = {m['labels']['audit']}")
    for r in m.get("paired") or []:
        a, u = r["all"], r["audit"]
        audit = f"; audit {a_diff(u)}" if u["n"] else ""
        out.print(f"paired {r['method']}: all {a_diff(a)}{audit} (same triplets, anchors resampled)")
    out.print(
        f"encoder: {m['encoder_texts_encoded']} texts encoded in {m['encoder_calls']} calls "
        "(0 = every vector read from the cache)"
    )
    if rep.get("full"):
        out.print(f"fine-tuned model saved to [bold]{rep['full']['path']}[/] (use it with --model)")
    if rep.get("model_id") is not None:
        out.print(
            f"stored adapter #{rep['model_id']} (refitted on all {m['n_gold']} gold triplets, "
            f"{m['final_steps']} steps); "
            f"use it: condsim-annot propose {rep['criterion']} --methods embedding,bm25,adapter --budget N"
        )


@click.command("train")
@click.argument("criterion")
@click.option(
    "--model", default=None, help="Base sentence-transformers model (path or hub name); default the bundled MiniLM."
)
@click.option("--rank", type=int, default=16, show_default=True, help="Rank of the adapter's low-rank map.")
@click.option("--temperature", type=float, default=0.1, show_default=True, help="Margin scale of the triplet loss.")
@click.option(
    "--l2", type=float, default=1e-2, show_default=True, help="Weight decay pulling the adapter to the base model."
)
@click.option(
    "--max-steps",
    type=int,
    default=300,
    show_default=True,
    help="Most adapter optimisation steps (fewer when inner folds stop it early).",
)
@click.option(
    "--test-fraction", type=float, default=0.3, show_default=True, help="Share of anchors held out for testing."
)
@click.option("--kfold", type=int, default=5, show_default=True, help="Folds (by anchor) when gold is scarce (< 300).")
@click.option(
    "--derived", is_flag=True, help="Also train on labels derived by transitivity (off: votes-backed gold only)."
)
@click.option(
    "--full", is_flag=True, help="Also fine-tune the model itself (sentence-transformers trainer, MNRL loss)."
)
@click.option("--epochs", type=int, default=1, show_default=True, help="Fine-tuning epochs (--full).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Fine-tuning batch size (--full).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Folder for the fine-tuned model (--full)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples (of anchors) for the CIs."
)
@click.option(
    "--cache-dir", default=None, help="Embedding cache folder (default: beside the store, or $CONDSIM_CACHE)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def train_cmd(
    ctx: Ctx,
    criterion: str,
    model: str | None,
    rank: int,
    temperature: float,
    l2: float,
    max_steps: int,
    test_fraction: float,
    kfold: int,
    derived: bool,
    full: bool,
    epochs: int,
    batch_size: int,
    out_dir: str | None,
    seed: int,
    bootstrap: int,
    cache_dir: str | None,
    as_json: bool,
) -> None:
    """Learn CRITERION's own similarity from its gold triplets and measure it on held-out anchors.

    By default an adapter: a small low-rank map on the cached embeddings (no document is
    re-embedded), trained on the latest calibration run's gold triplets (never on raw votes),
    each weighted by its label probability.  It is stored, versioned, and joins the proposer's
    committee as method `adapter`.  --full also fine-tunes the model (slow on CPU) and saves a
    folder that --model accepts.  Accuracy is reported on all held-out gold (biased: the
    proposer chose them where methods disagree) and on the random audit slice (unbiased).

    \b
    Examples:
      condsim-annot train proof-strategy
      condsim-annot train proof-strategy --full --epochs 1 --out models/proof-v1
      condsim-annot propose proof-strategy --methods embedding,bm25,adapter --budget 800
    """
    from condsim_annot.train.pipeline import TrainOptions, train

    if full and not out_dir:
        raise click.UsageError("--full needs --out FOLDER for the fine-tuned model")
    if not 0 < test_fraction < 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--test-fraction")
    opt = TrainOptions(
        model=model,
        cache_dir=cache_dir,
        rank=rank,
        temperature=temperature,
        l2=l2,
        max_steps=max_steps,
        test_fraction=test_fraction,
        kfold=kfold,
        derived=derived,
        seed=seed,
        bootstrap=bootstrap,
        full=full,
        epochs=epochs,
        out=out_dir,
        batch_size=batch_size,
    )

    def say(msg: Any) -> None:
        console.print(msg, highlight=False)

    rep = train(ctx.store(), criterion, opt, say=say)
    if as_json:
        click.echo(json.dumps(rep, indent=2, sort_keys=True, default=str))
    else:
        print_report(rep)


def register(main: click.Group) -> None:
    main.add_command(train_cmd)
