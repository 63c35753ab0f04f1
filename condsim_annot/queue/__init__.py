"""The annotation queue, store side: claim the next triplet, record an answer, undo, review.

Pure of Textual, so it can be tested and benchmarked alone; the TUI (``condsim_annot.tui``) is a thin
view over a :class:`Queue` and imports this package, never the reverse.

* :mod:`.claims` -- the claim store (``assignment`` slots; atomic claims across processes),
  with its statements composed in :mod:`.sql`;
* :mod:`.pairwise`, :mod:`.best_of_k`, :mod:`.review` -- one class per way of asking (:mod:`.base`
  holds what they share, :mod:`.groups` the best-of-k grids);
* :mod:`.prefetch` -- the look-ahead claim in a background thread;
* :mod:`.stats` -- session statistics (the ``annotationsession`` row of :mod:`.tables`);
* :mod:`.session` -- :class:`Queue`, the facade a screen drives.
"""

from .items import PRESENTED, AnyItem, CriterionInfo, Doc, GroupItem, Item, Progress, ReviewItem, VoteInfo
from .session import MODES, Queue
from .sql import HUMAN_SOURCES, PENDING_TTL

__all__ = [
    "HUMAN_SOURCES", "MODES", "PENDING_TTL", "PRESENTED", "AnyItem", "CriterionInfo", "Doc", "GroupItem", "Item",
    "Progress", "Queue", "ReviewItem", "VoteInfo",
]
