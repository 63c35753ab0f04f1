"""A criterion adapter: a low-rank bilinear correction of a bi-encoder's similarity.

The base similarity of an anchor ``a`` (embedded with the criterion as query prompt, ``q``)
and a document ``x`` (embedded without it, ``d``) is the cosine ``q . d``.  The adapter adds
a learnt low-rank term::

    s(a, x) = alpha q . d + (U^T q) . (V^T d)          U, V: [dim, rank]; V = U when tied

so it starts at the base model (alpha = 1, a small U . V), stays close to it (L2 on U and V)
and never needs a document re-embedded: the cached vectors are its input.  Tied (the default),
it is metric learning: a learnt criterion subspace added to the base cosine; ``alpha`` lets a
criterion the base model barely sees turn the base term down.  It is fitted on gold triplets
(a; p, n) with a soft-label logistic loss on the margin ``(s(a,p) - s(a,n)) / T``, the label
being the calibrated probability that p is the closer one, so an uncertain gold label
pulls less.  Early stopping on a held-out part (grouped by anchor, see :mod:`.evaluate`).

Scoring a block of anchors against every document is one matrix product on the
concatenated vectors ``[q, U^T q] . [d, V^T d]`` (:meth:`BilinearAdapter.expand_queries`,
:meth:`BilinearAdapter.expand_documents`).

crowd-kit / scikit-learn style: hyper-parameters in ``__init__``, ``fit`` on arrays,
learnt values as attributes with a trailing underscore.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class TripletArrays:
    """Triplets as embedding rows: anchor query vectors, positive and negative document vectors,
    and ``y`` = P(the positive is the closer one) (1.0 for a hard label)."""

    q: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> TripletArrays:
        return TripletArrays(self.q[idx], self.pos[idx], self.neg[idx], self.y[idx])


@dataclass
class _Batch:
    """Triplets as the fit uses them: what does not depend on the weights is computed once."""

    q: np.ndarray
    diff: np.ndarray  # pos - neg
    base: np.ndarray  # q . (pos - neg)
    y: np.ndarray

    @classmethod
    def of(cls, t: TripletArrays) -> _Batch:
        diff = t.pos - t.neg
        return cls(t.q, diff, np.einsum("ij,ij->i", t.q, diff), t.y)

    def margins(self, U: np.ndarray, V: np.ndarray, alpha: float) -> np.ndarray:
        return alpha * self.base + np.einsum("ij,ij->i", self.q @ U, self.diff @ V)


@dataclass
class BilinearAdapter:
    """Low-rank bilinear adapter (see the module docstring).

    rank: columns of U and V; temperature: margin scale of the loss (cosine margins are
    small); l2: weight decay on U and V (pull towards the base model); lr: Adam step size;
    max_steps / patience: full-batch steps, and how many without a better held-out loss
    before stopping."""

    rank: int = 16
    tied: bool = True
    temperature: float = 0.1
    l2: float = 1e-2
    lr: float = 0.01
    max_steps: int = 300
    patience: int = 40
    seed: int = 0
    U_: np.ndarray | None = field(default=None, repr=False)
    V_: np.ndarray | None = field(default=None, repr=False)
    alpha_: float = 1.0
    best_step_: int = 0
    history_: list = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ scoring
    def margins(self, t: TripletArrays) -> np.ndarray:
        """s(a, pos) - s(a, neg) per triplet (> 0: the adapter prefers the positive)."""
        base = self.alpha_ * np.einsum("ij,ij->i", t.q, t.pos - t.neg)
        if self.U_ is None or self.V_ is None:
            return base
        u = t.q @ self.U_
        return base + np.einsum("ij,ij->i", u, (t.pos - t.neg) @ self.V_)

    def expand_queries(self, q: np.ndarray) -> np.ndarray:
        """[q, U^T q]: with :meth:`expand_documents`, one dot product gives s(a, x)."""
        q = np.asarray(q, dtype=np.float32)
        return np.concatenate([self.alpha_ * q, q @ self.U_.astype(np.float32)], axis=1) if self.U_ is not None else q

    def expand_documents(self, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float32)
        return np.concatenate([d, d @ self.V_.astype(np.float32)], axis=1) if self.V_ is not None else d

    def loss(self, t: TripletArrays) -> float:
        """Mean soft-label logistic loss (without the L2 term)."""
        z = self.margins(t) / self.temperature
        return float(-(t.y * _log_sigmoid(z) + (1 - t.y) * _log_sigmoid(-z)).mean())

    # ------------------------------------------------------------------ fitting
    def _grads(self, b: _Batch, U: np.ndarray, V: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
        u = b.q @ U
        dv = b.diff @ V
        z = (alpha * b.base + np.einsum("ij,ij->i", u, dv)) / self.temperature
        g = (_sigmoid(z) - b.y) / (len(b.y) * self.temperature)  # dL/d(margin)
        gU = b.q.T @ (g[:, None] * dv)
        gV = b.diff.T @ (g[:, None] * u)
        if self.tied:  # V is U: both paths
            gU = gU + gV
            gV = gU
        return gU + 2 * self.l2 * U, gV + 2 * self.l2 * V, float(g @ b.base)

    def fit(self, train: TripletArrays, val: TripletArrays | None = None) -> BilinearAdapter:
        """See :meth:`_fit`; BLAS runs single-threaded here: the matrices are small, and idle BLAS threads
        spinning on a busy machine cost more CPU than the maths."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return self._fit(train, val)

    def _fit(self, train: TripletArrays, val: TripletArrays | None = None) -> BilinearAdapter:
        """Full-batch Adam; with ``val``, keep the step with the lowest held-out loss and stop after
        ``patience`` steps without improvement (``history_``: step, held-out loss, held-out accuracy);
        without it, run ``max_steps``."""
        if len(train) == 0:
            raise ValueError("no training triplets")
        dim = train.q.shape[1]
        rng = np.random.default_rng(self.seed)
        U = rng.normal(0.0, 0.01, (dim, self.rank))
        V = U if self.tied else np.zeros((dim, self.rank))
        params = [U] if self.tied else [U, V]
        w = np.zeros(1)  # log alpha
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params + [w]]
        b1, b2, eps = 0.9, 0.999, 1e-8
        self._keep(U, V, w)
        best, best_step, self.history_ = (self.loss(val) if val is not None else np.inf), 0, []
        tb, vb = _Batch.of(train), (_Batch.of(val) if val is not None else None)
        for step in range(1, self.max_steps + 1):
            gU, gV, ga = self._grads(tb, U, V, float(np.exp(w[0])))
            grads = ([gU] if self.tied else [gU, gV]) + [np.asarray([ga * np.exp(w[0])])]
            for p, g, (m, v) in zip(params + [w], grads, moments, strict=True):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= self.lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
            if vb is None:
                continue
            z = vb.margins(U, V, float(np.exp(w[0]))) / self.temperature
            vl = float(-(vb.y * _log_sigmoid(z) + (1 - vb.y) * _log_sigmoid(-z)).mean())
            self.history_.append((step, vl, float(np.mean(z > 0))))
            if vl < best - 1e-6:
                best, best_step = vl, step
                self._keep(U, V, w)
            elif step - best_step >= self.patience:
                break
        if val is None:
            self._keep(U, V, w)
            best_step = self.max_steps
        self.best_step_ = best_step
        return self

    def _keep(self, U: np.ndarray, V: np.ndarray, w: np.ndarray) -> None:
        self.U_, self.V_, self.alpha_ = U.copy(), V.copy(), float(np.exp(w[0]))

    # ------------------------------------------------------------------ storage
    def hyper_parameters(self) -> dict:
        return {
            "rank": self.rank,
            "tied": self.tied,
            "temperature": self.temperature,
            "l2": self.l2,
            "lr": self.lr,
            "max_steps": self.max_steps,
            "patience": self.patience,
            "seed": self.seed,
        }

    def to_bytes(self) -> bytes:
        """The fitted weights and hyper-parameters as one ``.npz`` blob (stored in the table)."""
        if self.U_ is None or self.V_ is None:
            raise ValueError("the adapter is not fitted")
        buf = io.BytesIO()
        np.savez(
            buf,
            U=self.U_.astype(np.float32),
            V=self.V_.astype(np.float32),
            meta=np.frombuffer(
                json.dumps({**self.hyper_parameters(), "best_step": self.best_step_, "alpha": self.alpha_}).encode(),
                dtype=np.uint8,
            ),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> BilinearAdapter:
        with np.load(io.BytesIO(blob)) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            best, alpha = int(meta.pop("best_step", 0)), float(meta.pop("alpha", 1.0))
            return cls(
                **meta, U_=z["U"].astype(np.float64), V_=z["V"].astype(np.float64), best_step_=best, alpha_=alpha
            )
