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

    def margins(self, U: np.ndarray, V: np.ndarray, alpha: float, b: np.ndarray | None = None) -> np.ndarray:
        m = alpha * self.base + np.einsum("ij,ij->i", self.q @ U, self.diff @ V)
        return m if b is None else m + self.diff @ b


@dataclass
class BilinearAdapter:
    """Low-rank bilinear adapter (see the module docstring).

    rank: columns of U and V; temperature: margin scale of the loss (cosine margins are
    small); l2: weight decay on U and V (pull towards the base model); lr: Adam step size;
    max_steps / patience: full-batch steps, and how many without a better held-out loss
    before stopping."""

    rank: int = 16
    tied: bool = True
    bias: bool = False  # a learnt document-side vector b: s += b . d (the criterion's own query-free direction)
    temperature: float = 0.1
    l2: float = 1e-2
    lr: float = 0.01
    max_steps: int = 300
    patience: int = 40
    seed: int = 0
    U_: np.ndarray | None = field(default=None, repr=False)
    V_: np.ndarray | None = field(default=None, repr=False)
    alpha_: float = 1.0
    b_: np.ndarray | None = field(default=None, repr=False)
    best_step_: int = 0
    members_: int = 1
    history_: list = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ scoring
    def margins(self, t: TripletArrays) -> np.ndarray:
        """s(a, pos) - s(a, neg) per triplet (> 0: the adapter prefers the positive)."""
        diff = t.pos - t.neg
        base = self.alpha_ * np.einsum("ij,ij->i", t.q, diff)
        if self.b_ is not None:
            base = base + diff @ self.b_
        if self.U_ is None or self.V_ is None:
            return base
        return base + np.einsum("ij,ij->i", t.q @ self.U_, diff @ self.V_)

    def expand_queries(self, q: np.ndarray) -> np.ndarray:
        """[alpha q, U^T q, 1]: with :meth:`expand_documents` ([d, V^T d, b . d]), one dot product gives s(a, x)."""
        q = np.asarray(q, dtype=np.float32)
        parts = [self.alpha_ * q]
        if self.U_ is not None:
            parts.append(q @ self.U_.astype(np.float32))
        if self.b_ is not None:
            parts.append(np.ones((len(q), 1), dtype=np.float32))
        return np.concatenate(parts, axis=1)

    def expand_documents(self, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float32)
        parts = [d]
        if self.V_ is not None:
            parts.append(d @ self.V_.astype(np.float32))
        if self.b_ is not None:
            parts.append((d @ self.b_.astype(np.float32))[:, None])
        return np.concatenate(parts, axis=1)

    @classmethod
    def average(cls, members: list[BilinearAdapter]) -> BilinearAdapter:
        """One adapter whose score is the mean of the members' (an ensemble, e.g. of k-fold fits): the mean of
        alpha q.d + q^T U_k V_k^T d + b_k . d is alpha-bar q.d + q^T [U_1..U_K] [V_1..V_K]^T d / K + b-bar . d,
        so the members' maps are concatenated (scaled by 1/sqrt K) and it stays one bilinear adapter."""
        fitted = [m for m in members if m.U_ is not None and m.V_ is not None]
        if not fitted:
            raise ValueError("no fitted adapter to average")
        k, first = len(fitted), fitted[0]
        out = cls(**{**first.hyper_parameters(), "rank": sum(m.rank for m in fitted)})
        Us = [m.U_ for m in fitted if m.U_ is not None]
        Vs = [m.V_ for m in fitted if m.V_ is not None]
        out.U_ = np.concatenate(Us, axis=1) / np.sqrt(k)
        out.V_ = np.concatenate(Vs, axis=1) / np.sqrt(k)
        out.alpha_ = float(np.mean([m.alpha_ for m in fitted]))
        bs = [m.b_ if m.b_ is not None else np.zeros(Us[0].shape[0]) for m in fitted]
        out.b_ = np.mean(bs, axis=0) if any(m.b_ is not None for m in fitted) else None
        out.best_step_ = int(np.median([m.best_step_ for m in fitted]))
        out.members_ = k
        return out

    def loss(self, t: TripletArrays) -> float:
        """Mean soft-label logistic loss (without the L2 term)."""
        z = self.margins(t) / self.temperature
        return float(-(t.y * _log_sigmoid(z) + (1 - t.y) * _log_sigmoid(-z)).mean())

    # ------------------------------------------------------------------ fitting
    def _grads(
        self, b: _Batch, U: np.ndarray, V: np.ndarray, alpha: float, bv: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
        u = b.q @ U
        dv = b.diff @ V
        z = alpha * b.base + np.einsum("ij,ij->i", u, dv)
        if bv is not None:
            z = z + b.diff @ bv
        g = (_sigmoid(z / self.temperature) - b.y) / (len(b.y) * self.temperature)  # dL/d(margin)
        gU = b.q.T @ (g[:, None] * dv)
        gV = b.diff.T @ (g[:, None] * u)
        if self.tied:  # V is U: both paths
            gU = gU + gV
            gV = gU
        gb = None if bv is None else b.diff.T @ g + 2 * self.l2 * bv
        return gU + 2 * self.l2 * U, gV + 2 * self.l2 * V, float(g @ b.base), gb

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
        bv = np.zeros(dim) if self.bias else None
        w = np.zeros(1)  # log alpha
        params = ([U] if self.tied else [U, V]) + [w] + ([bv] if bv is not None else [])
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        self._keep(U, V, w, bv)
        best, best_step, self.history_ = (self.loss(val) if val is not None else np.inf), 0, []
        tb, vb = _Batch.of(train), (_Batch.of(val) if val is not None else None)
        for step in range(1, self.max_steps + 1):
            gU, gV, ga, gb = self._grads(tb, U, V, float(np.exp(w[0])), bv)
            grads = (
                ([gU] if self.tied else [gU, gV]) + [np.asarray([ga * np.exp(w[0])])] + ([gb] if gb is not None else [])
            )
            for p, g, (m, v) in zip(params, grads, moments, strict=True):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= self.lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
            if vb is None:
                continue
            z = vb.margins(U, V, float(np.exp(w[0])), bv) / self.temperature
            vl = float(-(vb.y * _log_sigmoid(z) + (1 - vb.y) * _log_sigmoid(-z)).mean())
            self.history_.append((step, vl, float(np.mean(z > 0))))
            if vl < best - 1e-6:
                best, best_step = vl, step
                self._keep(U, V, w, bv)
            elif step - best_step >= self.patience:
                break
        if val is None:
            self._keep(U, V, w, bv)
            best_step = self.max_steps
        self.best_step_ = best_step
        return self

    def _keep(self, U: np.ndarray, V: np.ndarray, w: np.ndarray, bv: np.ndarray | None = None) -> None:
        self.U_, self.V_, self.alpha_ = U.copy(), V.copy(), float(np.exp(w[0]))
        self.b_ = None if bv is None else bv.copy()

    # ------------------------------------------------------------------ storage
    def hyper_parameters(self) -> dict:
        return {
            "rank": self.rank,
            "tied": self.tied,
            "bias": self.bias,
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
            b=(self.b_ if self.b_ is not None else np.zeros(0)).astype(np.float32),
            meta=np.frombuffer(
                json.dumps(
                    {
                        **self.hyper_parameters(),
                        "best_step": self.best_step_,
                        "alpha": self.alpha_,
                        "members": self.members_,
                    }
                ).encode(),
                dtype=np.uint8,
            ),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> BilinearAdapter:
        with np.load(io.BytesIO(blob)) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            best, alpha = int(meta.pop("best_step", 0)), float(meta.pop("alpha", 1.0))
            members = int(meta.pop("members", 1))
            b = z["b"].astype(np.float64) if "b" in z.files and z["b"].size else None
            return cls(
                **meta,
                U_=z["U"].astype(np.float64),
                V_=z["V"].astype(np.float64),
                b_=b,
                best_step_=best,
                alpha_=alpha,
                members_=members,
            )
