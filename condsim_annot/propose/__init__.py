"""Proposal stage: a committee of methods scores (anchor, candidate) under a criterion and picks
the triplets worth a vote.  Kept light (no torch import): the heavy modules load on use.

    from condsim_annot.propose import propose
    summary = propose(store, "same-technique", methods=["embedding", "bm25"], budget=200)
"""

from __future__ import annotations


def propose(store, criterion_name, **kw):
    """See :func:`condsim_annot.propose.select.propose`."""
    from .select import propose as _propose

    return _propose(store, criterion_name, **kw)
