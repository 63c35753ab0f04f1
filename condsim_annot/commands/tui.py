"""CLI of the TUI stage: ``condsim-annot tui``."""

from __future__ import annotations

import click

from condsim_annot.cli import Ctx, out, pass_ctx
from condsim_annot.errors import InputError


@click.command("tui")
@click.option("--annotator", "-a", required=True,
              help="Your name (votes are stored under it; a new name creates an annotator).")
@click.option("--criterion", help="Label only this criterion (default: every criterion, one after another).")
@click.option("--k", "k", type=click.IntRange(3, 9), default=None,
              help="Best-of-k: show the anchor with K candidates and pick the most similar "
                   "(K-1 comparisons per answer).")
@click.option("--review", is_flag=True,
              help="Review mode: adjudicate triplets whose votes disagree (human vs human, human vs LM judge).")
@click.option("--overlap", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Distinct annotators wanted per triplet.")
@click.option("--attention-rate", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True,
              help="Share of hidden attention checks mixed into the queue.")
@click.option("--seed", type=int, default=None, help="Seed for the A/B order and attention draws (tests, demos).")
@click.option("--theme", type=click.Choice(["dark", "light"]), default=None,
              help="Colour theme (default dark; ctrl+t switches while labeling).")
@pass_ctx
def tui(ctx: Ctx, annotator: str, criterion: str | None, k: int | None, review: bool, overlap: int,
        attention_rate: float, seed: int | None, theme: str | None) -> None:
    """Label triplets in the terminal: which candidate is more similar to the anchor?

    Keys: a/1/← = A, b/2/→ = B, t tie, c can't tell, s skip, u undo, n rationale, ? help, q quit.
    Every answer is committed when its key is pressed; quitting (or a crash) loses nothing and
    the next session resumes where this one stopped. A session summary is printed on exit.

    \b
    Examples:
      condsim-annot tui --annotator alice --criterion proof-strategy
      condsim-annot tui --annotator bob --k 4                  # best-of-4 grids
      condsim-annot tui --annotator carol --review             # adjudicate disagreements
      condsim-annot --db postgresql+psycopg://me@host/annot tui -a dave --overlap 3
    """
    from condsim_annot.tui.app import AnnotateApp, format_summary, make_queue  # Textual: only this command needs it

    if review and k:
        raise InputError("--review and --k cannot be combined")
    store = ctx.store()
    queue = make_queue(store, annotator, criterion=criterion, k=k, review=review, overlap=overlap,
                       attention_rate=attention_rate, seed=seed)
    try:
        AnnotateApp(queue, theme=theme).run()
    finally:
        summary = queue.close()
        out.print(format_summary(summary), highlight=False)


def register(main: click.Group) -> None:
    main.add_command(tui)
