"""The labeling TUI (``condsim-annot tui``).  Kept light: Textual is imported only when the app runs.

From Python (the demo does this)::

    from condsim_annot.tui import run_tui
    summary = run_tui("condsim.db", "alice", "proof-strategy")
"""


def run_tui(store_url, annotator, criterion=None, **kw):
    """Open the labeling TUI; blocks until the annotator quits and returns the session summary.

    See :func:`condsim_annot.tui.app.run_tui` for the options (k, review, overlap, attention_rate, seed, theme).
    """
    from .app import run_tui as _run

    return _run(store_url, annotator, criterion, **kw)
