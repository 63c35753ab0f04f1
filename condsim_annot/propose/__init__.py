"""Proposal stage: a committee of methods scores (anchor, candidate) under a criterion and picks
the triplets worth a vote.  Kept light (no torch import): the heavy modules load on use.

    from condsim_annot.propose import propose
    summary = propose(store, "same-technique", methods=["embedding", "bm25"], budget=200)

Stages: :mod:`.anchors` -> :mod:`.pools` -> :mod:`.choose` (pure) -> :mod:`.write`, run by
:func:`.select.propose` with one :class:`.options.ProposeOptions`.
"""

from __future__ import annotations

from typing import Any


def propose(store: Any, criterion_name: str, options: Any = None, **kw: Any) -> Any:
    """See :func:`condsim_annot.propose.select.propose` (imported on use: it pulls numpy and scipy)."""
    from .select import propose as _propose

    return _propose(store, criterion_name, options, **kw)
