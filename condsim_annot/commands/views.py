"""CLI of the views stage: ``condsim-annot views`` (maps, SOMs, named clusters, silhouettes, method agreement)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from condsim_annot.cli import Ctx, console, out, pass_ctx


def _sample(value: str) -> int | None:
    if value.lower() in ("all", "0"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number of documents or 'all'") from None
    if n < 3:
        raise click.BadParameter("at least 3 documents")
    return n


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print_summary(data: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(f"documents: {data['sample']['described']}; projection {data['projection']}")
    if data["silhouettes"]:
        t = Table(
            "field",
            "criterion",
            "space",
            "silhouette (space)",
            "silhouette (2-D map)",
            title="Which criterion separates which field",
        )
        for r in data["silhouettes"]:
            t.add_row(r["field"], r["criterion"], r["space"], _fmt(r["silhouette_space"]), _fmt(r["silhouette_map"]))
        out.print(t)
    for crit in data["criteria"]:
        m = data["maps"][crit]
        names = "; ".join(
            f"{k}: {nm['llm'] or ' '.join(nm['terms'][:3])} ({nm['size']})" for k, nm in m["clusters"]["names"].items()
        )
        out.print(
            f"[bold]{crit}[/]: {m['clusters']['k']} clusters (silhouette {_fmt(m['clusters']['silhouette'])}): {names}"
        )
        v = m["votes"]
        if "heldout_accuracy" in v:
            h = v["heldout_accuracy"]
            out.print(
                f"  votes map: t-STE on {v['used']} votes; held-out triplet accuracy {_fmt(h['votes_map'])} "
                f"(method space {_fmt(h['method_space'])}, n={h['n']})"
            )
        else:
            out.print(f"  {v.get('note', '')}")
    a = data["agreement"]
    out.print(f"method agreement on {a['sample']['described']} (linear CKA of the kernels, k-NN Jaccard@{a['k']}):")
    names = a["methods"]
    for i, x in enumerate(names):
        for j in range(i + 1, len(names)):
            out.print(
                f"  {escape(x)} vs {escape(names[j])}: CKA {_fmt(a['cka'][i][j])}, Jaccard {_fmt(a['jaccard'][i][j])}"
            )
    for m in a["linear_maps"]:
        out.print(
            f"  linear map {escape(m['from'])} -> {escape(m['to'])}: held-out R2 {_fmt(m['r2_heldout'])}, "
            f"k-NN Jaccard after translation {_fmt(m['knn_overlap'])}"
        )


@click.command("views")
@click.argument("criteria", nargs=-1, required=True)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default="views.html",
    show_default=True,
    help="The interactive page (self-contained: works offline, from a file).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="The page's data as JSON. Default: beside the page, same name with .json.",
)
@click.option("--color-by", metavar="FIELD", help="Document metadata field to colour by (default: clusters).")
@click.option(
    "--sample",
    "sample",
    default="3000",
    show_default=True,
    metavar="N|all",
    help="Map a uniform random sample of N documents ('all': the whole corpus).",
)
@click.option(
    "--agreement-sample",
    type=int,
    default=1000,
    show_default=True,
    help="Method agreement on a uniform random subsample of this size (whole n x n kernels).",
)
@click.option(
    "--projection",
    type=click.Choice(["pca", "umap", "tsne"]),
    default="pca",
    show_default=True,
    help="2-D projection: pca is instant; umap shows clusters best (+~15 s compiling on first use); tsne is slowest.",
)
@click.option(
    "--k", "k", type=int, default=10, show_default=True, help="Neighbours listed on click and used for Jaccard@k."
)
@click.option("--model", metavar="PATH_OR_NAME", help="Bi-encoder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--cache-dir", envvar="CONDSIM_CACHE", metavar="DIR", help="Embedding/BM25 cache (shared with propose).")
@click.option("--no-votes", is_flag=True, help="Do not read votes (maps of the methods only).")
@click.option("--llm-model", metavar="NAME", help="Name clusters with this LLM too (cached, like every call).")
@click.option("--base-url", metavar="URL", help="OpenAI-compatible endpoint for --llm-model.")
@click.option("--api-key-env", metavar="VAR", help="Environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample, projection and clustering seed.")
@pass_ctx
def views_cmd(
    ctx: Ctx,
    criteria,
    html_path,
    json_path,
    color_by,
    sample,
    agreement_sample,
    projection,
    k,
    model,
    cache_dir,
    no_votes,
    llm_model,
    base_url,
    api_key_env,
    seed,
):
    """Interactive maps of the corpus under each CRITERION, before and after votes.

    Per criterion: a map of each method's view (MiniLM with the criterion's instruction,
    BM25) and, once there are votes, a t-STE map of the votes started from the embedding
    map; a self-organising map with one snippet per cell; clusters (k by silhouette)
    named by c-TF-IDF terms (and by an LLM with --llm-model); the silhouette of metadata
    fields in every map; method agreement (linear CKA, k-NN Jaccard, linear maps between
    embedding spaces) on a uniform random sample.  Works before any vote or calibration.

    \b
    Examples:
      condsim-annot views same-topic same-technique --color-by category
      condsim-annot views proof-strategy --sample all --projection umap --html proof.html
      condsim-annot views same-topic --llm-model qwen2.5-7b --base-url http://127.0.0.1:8000/v1
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from condsim_annot.views.build import ViewOptions, build_views
    from condsim_annot.views.page import write_page

    opts = ViewOptions(
        sample=_sample(sample),
        agreement_sample=agreement_sample,
        color_by=color_by,
        k=k,
        model=model,
        cache_dir=cache_dir,
        seed=seed,
        votes=not no_votes,
        llm_model=llm_model,
        base_url=base_url,
        api_key_env=api_key_env,
        projection=projection,
    )
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def progress(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    with bar:
        data = build_views(ctx.store(), list(criteria), opts, progress)
    json_path = json_path or str(Path(html_path).with_suffix(".json"))
    write_page(data, html_path, json_path)
    _print_summary(data)
    out.print(f"wrote {html_path} and {json_path}")


def register(main: click.Group) -> None:
    main.add_command(views_cmd)
