"""CLI of the proposal stage: ``condsim-annot propose`` and ``condsim-annot methods``."""

from __future__ import annotations

import json

import click

from condsim_annot.cli import Ctx, console, out, pass_ctx


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=True,
    )


@click.command("propose")
@click.argument("criterion")
@click.option("--methods", "methods", metavar="M1,M2,...", default=None,
              help="Committee members (see `condsim-annot methods`). "
                   "Default: embedding,bm25,rewrite-bm25,in-one-word (LLM ones skipped without an endpoint).")
@click.option("--budget", type=int, required=True,
              help="The criterion's TOTAL number of triplets: re-running is a no-op, raising it adds the difference.")
@click.option("--per-anchor", type=int, default=5, show_default=True,
              help="At most this many triplets per anchor document.")
@click.option("--audit", type=float, default=0.1, show_default=True,
              help="Fraction of the new triplets drawn uniformly at random (unbiased method accuracy).")
@click.option("--attention", type=float, default=0.05, show_default=True,
              help="Fraction of attention checks (obvious triplets with a known answer).")
@click.option("--bridge", type=float, default=0.05, show_default=True,
              help="Fraction of bridge triplets ({a,b} asked with a and with b as anchor).")
@click.option("--top-k", type=int, default=10, show_default=True, help="Candidates each method nominates per anchor.")
@click.option("--model", metavar="PATH_OR_NAME",
              help="Bi-encoder for `embedding` and `in-one-word` (default: the bundled all-MiniLM-L6-v2).")
@click.option("--cross-encoder", "cross_encoder", metavar="PATH_OR_NAME",
              help="CrossEncoder model; giving one adds the `cross-encoder` method.")
@click.option("--llm-model", metavar="NAME",
              help="LLM for rewrite-bm25 / in-one-word / lm-judge (default: the LM judge's configuration).")
@click.option("--base-url", metavar="URL", help="OpenAI-compatible endpoint for the LLM methods.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (anchors, mid-rank/random candidates, audit slice).")
@click.option("--cache-dir", envvar="CONDSIM_CACHE", metavar="DIR",
              help="Embedding and BM25 index cache folder. Default: $CONDSIM_CACHE, else .condsim/ beside a SQLite "
                   "store, else ~/.cache/condsim-annot.")
@click.option("--chain/--no-chain", default=True, show_default=True,
              help="Chain an anchor's triplets so they share pairs ((x,y), (y,z), (x,z)): one component per anchor.")
@click.option("--rank", type=click.Choice(["gold", "information"]), default="gold", show_default=True,
              help="Once calibrated, rank comparisons by the expected NEW GOLD triplets per vote (P(label) >= the "
                   "run's tau with its min-votes after --votes more votes; fresh pairs predicted by the methods' "
                   "learnt weights; where gold is out of reach yet, those whose pairs the learnt weights separate "
                   "most, the least likely true ties, first), or by the expected information of one more vote.")
@click.option("--votes", type=int, default=3, show_default=True,
              help="Votes each new triplet will get (what --rank gold expects), 1 to 5.")
@click.option("--dry-run", is_flag=True, help="Score and select, but write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@pass_ctx
def propose_cmd(ctx: Ctx, criterion, methods, budget, per_anchor, audit, attention, bridge, top_k, model, cross_encoder,
                llm_model, base_url, seed, cache_dir, chain, rank, votes, dry_run, as_json):
    """Propose informative triplets for CRITERION with a committee of methods.

    Each method scores (anchor, candidate) under the criterion; candidates are the union
    of every method's top-k plus mid-rank and random documents; pairs are ranked by how
    much the methods disagree (vote entropy x fused margin near 0), favouring
    criterion-contrast negatives.  Once the criterion is calibrated (`calibrate`), comparisons
    are ranked by the expected number of NEW GOLD triplets per vote under the fitted model
    (strategy "expected-gold": a true tie or an already settled one is worth ~0, one the
    methods' learnt weights lean on is worth most; pairs nobody asked yet are predicted from
    those weights), or with --rank information by the expected information of one more vote
    (strategy "uncertainty").  An anchor's triplets are chained so they share
    pairs; an audit slice, attention checks and bridge triplets (where they join
    components of the comparison graph) are mixed in.  Every method's margin is stored with each triplet.  Batches are
    committed as they are written: Ctrl-C keeps what was written, re-running resumes.

    \b
    Examples:
      condsim-annot propose proof-strategy --budget 500
      condsim-annot calibrate proof-strategy && condsim-annot propose proof-strategy --budget 1000 --per-anchor 10
      condsim-annot propose proof-strategy --methods embedding,bm25 --budget 1000 --per-anchor 3
      condsim-annot propose proof-strategy --budget 500 --cross-encoder cross-encoder/ms-marco-MiniLM-L6-v2
      condsim-annot propose proof-strategy --budget 500 --model BAAI/bge-small-en-v1.5 --audit 0.2
      CONDSIM_CACHE=/data/emb condsim-annot --db postgresql+psycopg://me@db/annot propose same-topic --budget 200
    """
    from condsim_annot.propose.select import ProposeOptions, propose

    opts = ProposeOptions.from_kwargs(
        methods=methods, budget=budget, per_anchor=per_anchor, audit=audit, attention=attention, bridge=bridge,
        top_k=top_k, model=model, cross_encoder=cross_encoder, llm_model=llm_model, base_url=base_url, seed=seed,
        cache_dir=cache_dir, dry_run=dry_run, chain=chain, rank=rank, votes=votes)
    store = ctx.store()
    with _progress_bar() as progress:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        summary = propose(store, criterion, opts, progress=cb)
    if summary.stale_runs:
        console.print(f"[yellow]note:[/] proposal run(s) {', '.join(map(str, summary.stale_runs))} had died while "
                      "running: marked 'interrupted (stale)' (their triplets stand)", highlight=False)
    for name, reason in summary.skipped.items():
        console.print(f"[yellow]note:[/] skipped method [bold]{name}[/]: {reason}", highlight=False)
    if as_json:
        d = summary.to_dict()
        click.echo(json.dumps(d, indent=2, sort_keys=True, default=str))
        return
    out.print(summary.message, highlight=False)
    if summary.added or (dry_run and summary.by_strategy):
        parts = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_strategy.items()))
        out.print(
            f"run {summary.run_id if summary.run_id is not None else '-'}: methods {', '.join(summary.methods)}; "
            f"{summary.anchors} anchors, {summary.candidates} pooled candidates; {parts}; {summary.seconds:.1f}s",
            highlight=False,
        )
    if summary.calibration and (summary.added or dry_run):
        c = summary.calibration
        out.print(
            f"calibration run {c['run_id']} ({c['pairs']} scored pairs, {c['components']} components): "
            + (f"{summary.by_strategy.get('expected-gold', 0)} triplets ranked by the expected new gold per vote "
               f"(gold: P >= {c['gold_tau']:g} with >= {c['min_votes']} annotators after {c['votes']} votes)"
               if c.get("rank") == "gold" else
               f"{summary.by_strategy.get('uncertainty', 0)} triplets ranked by the expected information of one "
               "more vote")
            + (f", {c['bridging']} joining components" if c.get("bridging") else ""),
            highlight=False,
        )
    if summary.components and (summary.added or dry_run):
        g = summary.components
        out.print(f"comparison graph: {g['before']} -> {g['after']} components "
                  f"(largest {g['largest_before']} -> {g['largest_after']} pairs)", highlight=False)

@click.command("methods")
@click.option("--cache-dir", envvar="CONDSIM_CACHE", metavar="DIR",
              help="Cache folder to report (default as for `propose`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def methods_cmd(ctx: Ctx, cache_dir, as_json):
    """List the registered proposal methods, their settings and the caches (embeddings, BM25 indexes).

    \b
    Example:
      condsim-annot methods
      condsim-annot methods --json | jq '.methods[].name'
    """
    from condsim_annot.db import resolve_url
    from condsim_annot.propose.cache import cache_root, list_caches
    from condsim_annot.propose.llm_methods import llm_status
    from condsim_annot.propose.registry import DEFAULT_METHODS, REGISTRY

    root = cache_root(resolve_url(ctx.db), cache_dir)
    llm_ok, llm_msg = llm_status()
    rows = []
    for spec in REGISTRY.values():
        if spec.needs == "llm":
            avail = "yes" if llm_ok else "no (see below)"
        elif spec.needs == "cross-encoder":
            avail = "with --cross-encoder"
        else:
            avail = "yes"
        rows.append({"name": spec.name, "family": spec.family, "kind": spec.kind,
                     "criterion_aware": spec.criterion_aware, "default": spec.name in DEFAULT_METHODS,
                     "available": avail, "settings": spec.settings, "description": spec.description})
    caches = list_caches(root)
    from condsim_annot.propose.bm25 import list_bm25_caches

    bm25_caches = list_bm25_caches(root)
    if as_json:
        click.echo(json.dumps({"methods": rows, "cache_dir": str(root), "caches": caches, "bm25_caches": bm25_caches},
                              indent=2, default=str))
        return
    from rich.table import Table

    t = Table("method", "kind", "aware", "default", "available", "settings",
              title="proposal methods (aware = uses the criterion)")
    for r in rows:
        t.add_row(r["name"], r["kind"], "yes" if r["criterion_aware"] else "no", "yes" if r["default"] else "no",
                  r["available"], ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
    out.print(t)
    if not llm_ok:
        out.print(f"LLM methods: {llm_msg}", highlight=False)
    if caches:
        c = Table("cache", "model", "rows", "dim", "MiB", title=f"embedding cache: {root / 'emb'}")
        for e in caches:
            c.add_row(e.get("key", "?"), str(e.get("model") or ""), str(e.get("rows", "?")), str(e.get("dim", "?")),
                      f"{(e.get('bytes') or 0) / 2**20:.1f}")
        out.print(c)
    else:
        out.print(f"embedding cache: {root / 'emb'} (empty)", highlight=False)
    if bm25_caches:
        mib = sum(e["bytes"] for e in bm25_caches) / 2**20
        out.print(f"BM25 indexes: {root / 'bm25'}: {len(bm25_caches)} "
                  f"({', '.join(str(e['documents']) for e in bm25_caches)} documents; {mib:.1f} MiB)", highlight=False)


def register(main: click.Group) -> None:
    main.add_command(propose_cmd)
    main.add_command(methods_cmd)
