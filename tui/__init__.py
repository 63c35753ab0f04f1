"""The labeling TUI (``condsim-annot tui``): Textual screens over :class:`condsim_annot.queue.Queue`.

This package imports the queue; the queue never imports it.  Kept empty so that importing
``condsim_annot.tui`` (e.g. while the store discovers stage tables) does not load Textual.
From Python (the demo does this)::

    from condsim_annot.tui.app import run_tui
    summary = run_tui("condsim.db", "alice", "proof-strategy")
"""
