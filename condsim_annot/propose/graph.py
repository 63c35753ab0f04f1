"""The comparison graph (pure, on arrays): its nodes are unordered pairs {a, x}, each triplet (a; x, y)
an edge between {a, x} and {a, y}.  Scores compare directly only inside a connected component, so
the proposer reports how many components there are before and after a run, and prefers triplets
that join them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def _pair_key(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(a, x), np.maximum(a, x)
    return np.stack([lo, hi], axis=1)


def components(anchor: Iterable[int], first: Iterable[int], second: Iterable[int]) -> dict[str, int]:
    """Components of the comparison graph of the given triplets: ``components``, ``largest`` (in pairs) and
    ``pairs`` (nodes)."""
    a = np.asarray(list(anchor), dtype=np.int64)
    f = np.asarray(list(first), dtype=np.int64)
    s = np.asarray(list(second), dtype=np.int64)
    if not len(a):
        return {"components": 0, "largest": 0, "pairs": 0}
    keys = np.concatenate([_pair_key(a, f), _pair_key(a, s)])
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n, m = len(uniq), len(a)
    g = coo_matrix((np.ones(m), (inv[:m], inv[m:])), shape=(n, n))
    k, labels = connected_components(g, directed=False)
    return {"components": int(k), "largest": int(np.bincount(labels).max()), "pairs": int(n)}


class UnionFind:
    """Union-find over hashable nodes (the selection joins components as it goes)."""

    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x: object) -> object:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, x: object, y: object) -> bool:
        """Join the components of x and y; False if they were already one."""
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return False
        self.parent[rx] = ry
        return True
