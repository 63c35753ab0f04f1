"""The labeling app: one Textual App, one Screen per mode (pairwise, best-of-k, review).

Open it from Python with :func:`run_tui` (the demo does), or from the shell::

    condsim-annot tui --annotator alice --criterion proof-strategy
"""

from __future__ import annotations

import gc

from textual.app import App
from textual.binding import Binding

from ..db import Store, open_store
from ..queue import Queue
from .screens import BestOfKScreen, PairwiseScreen, ReviewScreen


class AnnotateApp(App):
    """Keyboard-first labeling over a :class:`Queue`; returns the session summary from ``run()``."""

    CSS_PATH = "app.tcss"
    TITLE = "condsim-annot"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+t", "toggle_theme", "theme", show=False)]

    def __init__(self, queue: Queue, *, theme: str | None = None):
        super().__init__()
        self.queue = queue
        self.k = queue.k if queue.mode == "best-of-k" else None
        self.summary: dict | None = None
        if theme:
            self.theme = {"light": "textual-light", "dark": "textual-dark"}.get(theme, theme)

    def on_mount(self) -> None:
        # everything built so far lives as long as the app: keep it out of the cyclic GC's full
        # passes, which otherwise land on random key presses as 10-30 ms pauses
        gc.collect()
        gc.freeze()
        screen = {"pairwise": PairwiseScreen, "best-of-k": BestOfKScreen, "review": ReviewScreen}[self.queue.mode]
        self.push_screen(screen())

    def on_unmount(self) -> None:
        gc.unfreeze()  # an embedding process (the demo, tests) gets its collector back

    def count_in_background(self) -> None:
        self.run_worker(self._count, thread=True, exclusive=True, group="count", exit_on_error=False)

    def _count(self) -> None:
        self.queue.count_available()
        self.call_from_thread(self._refresh_progress)

    def _refresh_progress(self) -> None:
        scr = self.screen
        if hasattr(scr, "update_progress"):
            scr.update_progress()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"


def make_queue(store: Store, annotator: str, *, criterion: str | None = None, k: int | None = None,
               review: bool = False, overlap: int = 2, attention_rate: float = 0.05, seed: int | None = None) -> Queue:
    mode = "review" if review else ("best-of-k" if k and k > 2 else "pairwise")
    return Queue(store, annotator, criterion=criterion, mode=mode, overlap=overlap, attention_rate=attention_rate,
                 k=k or 4, seed=seed)


def run_tui(store_url: str | None, annotator: str, criterion: str | None = None, *, k: int | None = None,
            review: bool = False, overlap: int = 2, attention_rate: float = 0.05, seed: int | None = None,
            theme: str | None = None) -> dict:
    """Open the labeling TUI on the store at ``store_url`` (None: ``$CONDSIM_DB`` or ./condsim.db).

    Blocks until the annotator quits; returns the session summary (also stored in ``annotationsession``).
    """
    store = open_store(store_url)
    try:
        queue = make_queue(store, annotator, criterion=criterion, k=k, review=review, overlap=overlap,
                           attention_rate=attention_rate, seed=seed)
        try:
            AnnotateApp(queue, theme=theme).run()
        finally:
            summary = queue.close()
        return summary
    finally:
        store.close()


def format_summary(s: dict) -> str:
    """The session summary printed on exit."""
    mins = s["duration_s"] / 60
    pace = (f" ({s['votes_per_min']:.1f}/min, median {s['median_latency_ms'] / 1000:.1f}s per answer)"
            if s["answers"] and s.get("median_latency_ms") is not None else "")
    crits = ", ".join(s["criteria"])
    parts = [
        f"session of {s['annotator']} ({s['mode']}, {crits}): {s['answers']} answers in {mins:.1f} min{pace}",
        f"  skipped {s['skips']}, undone {s['undos']}, ties {s['ties']}, can't tell {s['cant_tell']}, "
        f"rationales {s['rationales']}",
        f"  {s['done_total']} answered by {s['annotator']} in total; everything is saved (session {s['session'][:8]})",
    ]
    return "\n".join(parts)
