"""Each triplet's exact one-dimensional posterior of d = s_i - s_j, on a grid (for :class:`.model.TripletModel`).

The posterior of d is the triplet's cavity N(mu_c, v_c) (what everything but its own votes says;
a mixture over tau's posterior nodes) times the exact Davidson likelihood of its votes, each vote's
likelihood averaged over beta_j's posterior (3 Gauss-Hermite nodes on log beta when its sd is not
negligible).  The grid spans the cavity and the MAP mode +- 7 sds in ``G`` cells; P(d > 0) counts
the cell that straddles 0 by its share above 0.  Triplets are processed in blocks so that no
array exceeds a few million cells, which keeps a 1M-vote fit in memory and in cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from .davidson import FIRST, SECOND, TIE

if TYPE_CHECKING:
    from .model_data import _Data

F64 = NDArray[np.floating]  # float64 or the grids' float32
I64 = NDArray[np.int64]
_Q3 = (np.array([-math.sqrt(3.0), 0.0, math.sqrt(3.0)]), np.log(np.array([1 / 6, 2 / 3, 1 / 6])))
CELLS_PER_BLOCK = 2_000_000
BETA_SD_NEGLIGIBLE = 0.03
_FINE_EDGES = np.concatenate([-np.geomspace(5.0, 0.03, 9), [0.0], np.geomspace(0.03, 5.0, 9)]).astype(np.float32)


@dataclass
class Loo:
    """Sampled votes, each with its triplet's posterior without it (for the beta and nu updates)."""

    grid: F64  # (k, G) cell centres
    q: F64  # (k, G) the slab's cells' normalised weights (float32)
    vidx: I64  # (k,) votes (sorted vote order)
    lws: F64  # (k,) log posterior weight of the slab (d continuous)
    lw0: F64  # (k,) log posterior weight of the spike (a true tie, d = 0)


@dataclass
class _Block:
    tids: I64  # (B,) triplets
    grid: F64  # (B, G) cell centres
    lwidth: F64  # (B, G) log cell width
    lprior: F64  # (B, G) log cavity mass of each cell
    vidx: I64  # (mv,) votes (sorted vote order)
    vrow: I64  # (mv,) block row of each vote
    vll: F64  # (mv, G) log-likelihood of each vote on its triplet's grid
    LL: F64  # (B, G) sum of the block's votes' log-likelihoods
    vll0: F64  # (mv,) log-likelihood of each vote at d = 0 (a true tie)
    LL0: F64  # (B,) their sum per triplet


def _logsumexp(x: F64, axis: int = -1) -> F64:
    mx = np.max(x, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(np.sum(np.exp(x - mx), axis=axis)) + np.squeeze(mx, axis=axis), dtype=np.float64)


class TripletIntegrals:
    """Grid integrals over the triplets of one fit state (cavities, beta, nu, tau nodes)."""

    def __init__(
        self,
        d: _Data,
        cav: tuple[F64, F64, F64, F64, F64, F64],
        beta: F64,
        beta_sd: F64,
        nu: F64,
        tau_nodes: tuple[F64, F64],
        G: int,
        tie_mass: float | F64 = 0.0,
        tie_answer: F64 | None = None,
        lapse: F64 | None = None,
        lapse_tie: F64 | None = None,
    ) -> None:
        self.d = d
        # each annotator's lapse rate: with probability lapse_j the answer ignores d (tie with lapse_tie_j,
        # else a side at random); the rest follows Davidson
        self.lapse = np.zeros(len(beta)) if lapse is None else lapse
        self.lapse_tie = np.full(len(beta), 1 / 3) if lapse_tie is None else lapse_tie
        self.mu_c, self.vu, self.vw, self.dt = cav[0], cav[1], cav[2], cav[3]
        self.beta, self.beta_sd, self.nu = beta, beta_sd, nu
        self.tau_off, self.tau_w = tau_nodes
        self.G = G
        # prior probability that a triplet is a true tie (d exactly 0): one number, or one per triplet
        self.tie_mass: float | F64 = tie_mass
        # each annotator's probability of answering "tie" on a true tie (default: Davidson's at d = 0)
        self.theta = nu / (2.0 + nu) if tie_answer is None else tie_answer
        self.marginal_beta = False  # average each vote over beta_j's posterior (the final pass)
        self._zs_cache: tuple[tuple[object, ...], F64] | None = None  # :meth:`evidences`' last slab evidences
        big = float(np.exp(2 * np.max(self.tau_off)))
        sd = np.sqrt(self.vu * big + self.vw)
        self.lo = np.minimum(self.mu_c, self.dt) - 7.0 * sd
        self.hi = np.maximum(self.mu_c, self.dt) + 7.0 * sd

    # ------------------------------------------------------------------ blocks
    def _votes_of(self, tids: I64) -> tuple[I64, I64]:
        st = self.d.starts
        cnt = st[tids + 1] - st[tids]
        rows = np.repeat(np.arange(len(tids)), cnt)
        base = np.repeat(st[tids] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
        return (base + np.arange(int(cnt.sum()))).astype(np.int64), rows.astype(np.int64)

    def _prior(self, tids: I64, grid: F64, scale_off: F64 | None = None, sq: F64 | None = None) -> F64:
        """log cavity density on the grid (``sq`` = (grid - mu_c)^2 if known): a mixture over tau's nodes, summed
        around its widest node, log N_wide + log(1 + sum of the others' ratios) (the ratios cannot overflow)."""
        offs = self.tau_off if scale_off is None else scale_off
        lw = np.log(self.tau_w) if scale_off is None else np.zeros(len(offs))
        if sq is None:
            sq = np.square(grid - self.mu_c[tids, None].astype(np.float32))
        v = self.vu[tids, None] * np.exp(2 * np.asarray(offs))[None, :] + self.vw[tids, None]  # (B, nodes)
        c = (lw[None, :] - 0.5 * np.log(2 * np.pi * v)).astype(np.float32)
        a = (0.5 / v).astype(np.float32)
        k = int(np.argmax(offs))
        out = c[:, k : k + 1] - a[:, k : k + 1] * sq
        if len(offs) > 1:
            acc = np.zeros_like(out)
            for j in range(len(offs)):
                if j != k:
                    e = (c[:, j : j + 1] - c[:, k : k + 1]) - (a[:, j : j + 1] - a[:, k : k + 1]) * sq
                    acc += np.exp(e, out=e)
            out += np.log1p(acc, out=acc)
        return out

    def vote_ll(self, vidx: I64, grid_rows: F64) -> F64:
        """log P(vote | d) on each vote's grid, averaged over beta_j's posterior where it is not negligible and
        mixed with the lapse.  Probabilities first (:func:`vote_prob`), one log at the end: the same numbers as
        a log-space logsumexp and logaddexp in a third of the passes."""
        d = self.d
        a = d.ann[vidx]
        out = d.out[vidx]
        b = self.beta[a]
        nu = self.nu[a]
        unsure = (self.beta_sd[a] > BETA_SD_NEGLIGIBLE) & self.marginal_beta
        if unsure.any():
            p = np.empty(grid_rows.shape, dtype=np.float32)
            sure = ~unsure
            p[sure] = vote_prob(0.5 * b[sure], grid_rows[sure], out[sure], nu[sure])
            gr, ou, lb, sd, nuu = grid_rows[unsure], out[unsure], np.log(b[unsure]), self.beta_sd[a[unsure]], nu[unsure]
            acc = np.zeros(gr.shape, dtype=np.float32)
            for z, lw in zip(*_Q3, strict=False):
                pk = vote_prob(0.5 * np.exp(lb + z * sd), gr, ou, nuu)
                pk *= np.float32(math.exp(lw))
                acc += pk
            p[unsure] = acc
        else:
            p = vote_prob(0.5 * b, grid_rows, out, nu)
        lam = self.lapse[a]
        if np.any(lam > 0):
            with np.errstate(divide="ignore"):
                lq = np.exp(lapse_log_prob(out, self.lapse_tie[a]))
            p *= (1.0 - lam).astype(np.float32)[:, None]
            p += (lam * lq).astype(np.float32)[:, None]
        with np.errstate(divide="ignore"):
            return np.log(p, out=p)

    def mix_lapse(self, slab: F64, out: I64, ann: I64) -> F64:
        """log P(vote | slab) from the Davidson part integrated over d (``slab``, per vote) and the lapse."""
        lam = self.lapse[ann]
        if not np.any(lam > 0):
            return slab
        with np.errstate(divide="ignore"):
            return np.asarray(
                np.logaddexp(np.log1p(-lam) + slab, np.log(lam) + lapse_log_prob(out, self.lapse_tie[ann])),
                dtype=np.float64,
            )

    def _cells(self, tids: I64) -> tuple[F64, F64]:
        """Cell centres and widths: ``G`` even cells over the row's range plus fine cells near 0 (where
        P(d > 0) is decided and a few votes' likelihood bends), 0 always an edge."""
        lo, hi = self.lo[tids, None].astype(np.float32), self.hi[tids, None].astype(np.float32)
        even = lo + (hi - lo) * np.linspace(0.0, 1.0, self.G + 1, dtype=np.float32)[None, :]
        fine = np.clip(np.broadcast_to(_FINE_EDGES, (len(tids), len(_FINE_EDGES))), lo, hi)
        edges = np.sort(np.concatenate([even, fine], axis=1), axis=1)
        width = np.diff(edges, axis=1)
        return 0.5 * (edges[:, 1:] + edges[:, :-1]), width

    def _block(self, tids: I64) -> _Block:
        grid, width = self._cells(tids)
        with np.errstate(divide="ignore"):
            lw = np.log(width)
        vidx, vrow = self._votes_of(tids)
        vll = self.vote_ll(vidx, grid[vrow])
        LL = _row_sums(vrow, vll, len(tids))
        vll0 = _log_lik_at_zero(self.d.out[vidx], self.theta[self.d.ann[vidx]])
        LL0 = np.asarray(np.bincount(vrow, vll0, minlength=len(tids)), dtype=np.float64)
        return _Block(tids, grid, lw, self._prior(tids, grid) + lw, vidx, vrow, vll, LL, vll0, LL0)

    def prior_tie(self, tids: I64, tie_mass: float | F64 | None = None) -> F64:
        """Prior tie probability of the triplets ``tids`` (a number for all, or one per triplet)."""
        pi = self.tie_mass if tie_mass is None else tie_mass
        if np.ndim(pi) == 0:
            return np.full(len(tids), float(pi))
        return np.asarray(pi, dtype=np.float64)[tids]

    def _mix(self, z_slab: F64, z_spike: F64, tids: I64) -> tuple[F64, F64]:
        """Log posterior weights (slab, spike) of the triplets ``tids`` from their two log evidences and tie prior."""
        pi = self.prior_tie(tids)
        if not np.any(pi > 0):
            return np.zeros_like(z_slab), np.full_like(z_slab, -np.inf)
        with np.errstate(divide="ignore"):
            a = np.log1p(-pi) + z_slab
            b = np.log(pi) + z_spike
        tot = np.logaddexp(a, b)
        return a - tot, b - tot

    def blocks(self, tids: I64) -> Iterator[_Block]:
        st = self.d.starts
        cnt = np.maximum(st[tids + 1] - st[tids], 1) * (self.G + len(_FINE_EDGES))
        cum = np.cumsum(cnt)
        i = 0
        while i < len(tids):
            j = int(np.searchsorted(cum, (cum[i - 1] if i else 0) + CELLS_PER_BLOCK, side="right"))
            j = max(j, i + 1)
            yield self._block(tids[i:j])
            i = j

    # ------------------------------------------------------------------ results
    def posterior_all(self, loo_votes: NDArray[np.bool_]) -> tuple[F64, F64, F64, F64, F64]:
        """P(d > 0), P(d < 0), E[d], Var[d] of every triplet (P(d = 0), a true tie, is the rest), and the
        held-out predictive (m, 3) of the votes ``loo_votes`` (NaN for the others)."""
        T = len(self.d.ti)
        p, q, mean, var = np.empty(T), np.empty(T), np.empty(T), np.empty(T)
        loo = np.full((len(self.d.vt), 3), np.nan)
        for b in self.blocks(np.arange(T)):
            keep = loo_votes[b.vidx]
            if keep.any():
                loo[b.vidx[keep]] = self.loo_predictive(b, keep)
            lp = b.lprior + b.LL
            zs = _logsumexp(lp)
            ws = np.exp(self._mix(zs, b.LL0, b.tids)[0])
            w = np.exp(lp - zs[:, None])
            p[b.tids] = ws * (w * (b.grid > 0)).sum(1)
            q[b.tids] = ws * (w * (b.grid < 0)).sum(1)
            m = (w * b.grid).sum(1)
            v = np.maximum((w * (b.grid - m[:, None]) ** 2).sum(1), 0.0)
            mean[b.tids] = ws * m
            var[b.tids] = ws * (v + m**2) - (ws * m) ** 2
        return p, q, mean, var, loo

    def _cavity_rows(self, b: _Block, keep: NDArray[np.bool_]) -> tuple[I64, F64, F64, F64]:
        """For the block's votes ``keep``: rows, the slab's normalised log weights without the vote, and the
        log weights of the slab and of the tie spike without it."""
        rows = b.vrow[keep]
        lq = (b.lprior + b.LL)[rows] - b.vll[keep]
        zs = _logsumexp(lq)
        lq -= zs[:, None].astype(lq.dtype)
        lws, lw0 = self._mix(zs, b.LL0[rows] - b.vll0[keep], b.tids[rows])
        return rows, np.exp(lq, out=lq), lws, lw0

    def loo_predictive(self, b: _Block, keep: NDArray[np.bool_]) -> F64:
        """(k, 3) P(first, second, tie) of the block's votes ``keep`` predicted without each (its cavity)."""
        rows, q, lws, lw0 = self._cavity_rows(b, keep)
        a = self.d.ann[b.vidx[keep]]
        grid = b.grid[rows]
        out = np.zeros((len(rows), 3))
        for k in (FIRST, SECOND, TIE):
            kk = np.full(len(rows), k, dtype=np.int64)
            slab = self.mix_lapse(_log_mean(q, vote_prob(0.5 * self.beta[a], grid, kk, self.nu[a])), kk, a)
            spike = _log_lik_at_zero(np.full(len(rows), k, dtype=np.int64), self.theta[a])
            out[:, k] = np.exp(np.logaddexp(lws + slab, lw0 + spike))
        return out

    def loo_cavities(self, vsub: I64) -> Loo:
        """For the votes ``vsub``: their triplet's grid and posterior without the vote (:class:`Loo`)."""
        d = self.d
        tids = np.unique(d.vt[vsub])
        parts: list[list[NDArray]] = [[], [], [], [], []]
        want = np.zeros(len(d.vt), dtype=bool)
        want[vsub] = True
        for b in self.blocks(tids):
            keep = want[b.vidx]
            rows, q, lws, lw0 = self._cavity_rows(b, keep)
            for lst, x in zip(parts, (b.grid[rows], q, b.vidx[keep], lws, lw0), strict=True):
                lst.append(x)
        order = np.argsort(np.concatenate(parts[2]))
        grid, q, idx, lws, lw0 = (np.concatenate(x)[order] for x in parts)
        return Loo(grid, q, idx, lws, lw0)

    def update_nu(self, loo: Loo, beta: F64, prior_sd: float = 1.0, centre: float | None = None) -> F64:
        """Each annotator's tie parameter nu_j maximising the held-out predictive likelihood of his sampled
        votes (Newton on log nu_j, prior N(log of the overall nu, 1)): the tie propensity is the
        annotator's, so that beta_j measures discrimination and not how often one answers "tie"."""
        grid, q, vidx = loo.grid, loo.q, loo.vidx
        ann = self.d.ann[vidx]
        A = len(self.nu)
        out = self.d.out[vidx][:, None]
        half_b = 0.5 * beta[ann]
        if centre is None:
            centre = float(np.log(np.median(self.nu[self.nu > 0]))) if np.any(self.nu > 0) else -2.0
        lnu = np.log(np.maximum(self.nu, 1e-4))

        def f(x: F64) -> F64:
            nu_v = np.exp(x[ann])
            ll = np.logaddexp(
                loo.lws + self.mix_lapse(_log_mean(q, vote_prob(half_b, grid, out[:, 0], nu_v)), out[:, 0], ann),
                loo.lw0 + _log_lik_at_zero(out[:, 0], self.theta[ann]),
            )
            return np.bincount(ann, ll, minlength=A) - 0.5 * (x - centre) ** 2 / prior_sd**2

        e = 0.05
        for _ in range(3):
            f0, fp, fm = f(lnu), f(lnu + e), f(lnu - e)
            g1, g2 = (fp - fm) / (2 * e), (fp - 2 * f0 + fm) / e**2
            step = np.where(g2 < 0, -g1 / np.where(g2 < 0, g2, -1.0), np.sign(g1) * 0.5)
            lnu = np.clip(lnu + np.clip(step, -1.0, 1.0), -8.0, math.log(NU_MAX))
            if np.max(np.abs(step)) < 1e-3:
                break
        return np.asarray(np.exp(lnu), dtype=np.float64)

    def update_lapse(self, loo: Loo, free: NDArray[np.bool_]) -> tuple[F64, F64, F64]:
        """Each annotator's lapse rate, the lapse's tie share and a factor on his beta, jointly maximising the
        held-out predictive likelihood of his sampled votes (a grid; prior Beta(1, 5) on the rate).  Jointly,
        because a lapse and a small beta both explain wrong answers: one at a time stays at lapse 0.  The lapse
        does not depend on d, so each vote's Davidson part is integrated once per beta factor and the grid over
        (lapse, tie share) costs one pass over scalars per value.  Returns (lapse, tie share, beta factor)."""
        keep = _first_per_group(self.d.ann[loo.vidx], LAPSE_VOTES)
        vidx = loo.vidx[keep]
        ann, out = self.d.ann[vidx], self.d.out[vidx]
        A = len(self.lapse)
        grid, q, lws = loo.grid[keep], loo.q[keep], loo.lws[keep]
        spike = loo.lw0[keep] + _log_lik_at_zero(out, self.theta[ann])
        best = np.full(A, -np.inf)
        lam_out, kap_out, mult_out = self.lapse.copy(), self.lapse_tie.copy(), np.ones(A)
        nu = self.nu[ann]
        lapse_p = {k: np.exp(lapse_log_prob(out, np.full(len(out), k))) for k in LAPSE_TIE_GRID + (1 / 3,)}
        with np.errstate(divide="ignore", over="ignore"):
            for mult in BETA_FACTORS:
                dav = _log_mean(q, vote_prob(0.5 * mult * self.beta[ann], grid, out, nu))
                # P(vote) = w_slab ((1 - lam) P_dav + lam P_lapse) + w_spike P_spike, in probabilities scaled by the
                # larger of the Davidson and spike terms (one log per vote and grid value, no logaddexp)
                shift = np.maximum(lws + dav, spike)
                shift = np.where(np.isfinite(shift), shift, lws)  # P_dav = 0 and no spike: the lapse's term alone
                a_dav, c_spike, b_slab = np.exp(lws + dav - shift), np.exp(spike - shift), np.exp(lws - shift)
                for lam in LAPSE_GRID:
                    for kap in LAPSE_TIE_GRID if lam > 0 else (1 / 3,):
                        mix = (1.0 - lam) * a_dav + c_spike
                        if lam > 0:
                            mix += lam * b_slab * lapse_p[kap]
                        tot = (
                            np.bincount(ann, shift + np.log(mix), minlength=A)
                            + 4.0 * math.log1p(-lam)
                            - 0.5 * math.log(mult) ** 2
                        )
                        better = free & (tot > best + 1e-9)
                        best = np.where(better, tot, best)
                        lam_out = np.where(better, lam, lam_out)
                        kap_out = np.where(better, kap, kap_out)
                        mult_out = np.where(better, mult, mult_out)
        return lam_out, kap_out, mult_out

    def lapse_moments(self, loo: Loo, lam: F64, kap: F64) -> tuple[F64, F64]:
        """Each annotator's lapse rate and its tie share from his votes on triplets the others decide (the vote's
        cavity puts > ``DECISIVE`` on one side of the slab): under sign-or-lapse votes a "tie" there has
        probability lapse x tie share and the other side lapse x (1 - tie share) / 2.  The grid's (held-out
        likelihood) kept an accurate annotator's lapse at 0 - a broad cavity explains his stray answers as close
        calls - so his stray "tie" sent answerable triplets to the spike.  Annotators without such votes keep
        ``lam``, ``kap``."""
        ann, out = self.d.ann[loo.vidx], self.d.out[loo.vidx]
        ws = np.exp(loo.lws)
        pf, ps = ws * (loo.q * (loo.grid > 0)).sum(1), ws * (loo.q * (loo.grid < 0)).sum(1)
        side = np.where(pf > DECISIVE, FIRST, np.where(ps > DECISIVE, SECOND, -1))
        dec = side >= 0
        A = len(lam)
        n = np.bincount(ann[dec], minlength=A).astype(float)
        tie = np.bincount(ann[dec], out[dec] == TIE, minlength=A)
        wrong = np.bincount(ann[dec], (out[dec] != TIE) & (out[dec] != side[dec]), minlength=A)
        has = n > 0
        lam_m = np.clip((tie + 2 * wrong + 0.5) / (n + 5.0), 0.0, 0.95)  # smoothed like the grid's Beta(1, 5)
        kap_m = (tie + 0.5) / (tie + 2 * wrong + 1.5)
        return np.asarray(np.where(has, lam_m, lam), dtype=np.float64), np.asarray(
            np.where(has, kap_m, kap), dtype=np.float64
        )

    def log_evidence(self, tids: I64) -> float:
        """Log evidence of the votes of the triplets ``tids``, each from its cavity (slab and spike mixed by the
        tie prior): with leave-one-triplet-out cavities, how well the rest predicts each triplet's votes."""
        return float(
            sum(float(self._log_evidence(_logsumexp(b.lprior + b.LL), b.LL0, b.tids).sum()) for b in self.blocks(tids))
        )

    def _log_evidence(self, z_slab: F64, z_spike: F64, tids: I64, tie_mass: float | F64 | None = None) -> F64:
        pi = self.prior_tie(tids, tie_mass)
        if not np.any(pi > 0):
            return z_slab
        with np.errstate(divide="ignore"):
            return np.logaddexp(np.log1p(-pi) + z_slab, np.log(pi) + z_spike)

    def evidences(self, tids: I64) -> tuple[F64, F64]:
        """Log evidence of each triplet's votes under the slab (d continuous) and under the spike (a true tie), in
        the order of sorted ``tids``.  The slab's is kept for the next call on the same triplets and vote model
        (a fit asks four times on one sample): the spike's is a sum over votes, recomputed for the current theta."""
        key = (tids.tobytes(), self.marginal_beta) + tuple(
            x.tobytes() for x in (self.beta, self.beta_sd, self.nu, self.lapse, self.lapse_tie)
        )
        if self._zs_cache is None or self._zs_cache[0] != key:
            zs_all, t_all = [], []
            for b in self.blocks(tids):
                zs_all.append(_logsumexp(b.lprior + b.LL))
                t_all.append(b.tids)
            self._zs_cache = (key, np.concatenate(zs_all)[np.argsort(np.concatenate(t_all))])
        ts = np.sort(tids)
        vidx, vrow = self._votes_of(ts)
        ll0 = _log_lik_at_zero(self.d.out[vidx], self.theta[self.d.ann[vidx]])
        return self._zs_cache[1], np.asarray(np.bincount(vrow, ll0, minlength=len(ts)), dtype=np.float64)

    def tie_mass_profile(self, tids: I64) -> tuple[F64, F64]:
        """Log marginal likelihood of the triplets' votes as a function of the tie mass (grid, values)."""
        grid = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
        zs, z0 = self.evidences(tids)
        # a Beta(1, 3) prior on the tie mass: with few votes, no tie mass unless the votes ask for it
        prior = 2.0 * np.log1p(-grid)
        return grid, np.array([float(self._log_evidence(zs, z0, tids, pi).sum()) for pi in grid]) + prior

    def tie_answer_update(self, tids: I64, tie_mass: float | F64) -> F64:
        """Each annotator's share of "tie" answers on true ties, weighting each vote by its triplet's posterior
        probability of being a true tie (Beta(1, 1) smoothing); annotators without such votes keep theirs."""
        A = len(self.theta)
        ts = np.sort(tids)
        zs, z0 = self.evidences(ts)
        saved, self.tie_mass = self.tie_mass, tie_mass
        w0t = np.exp(self._mix(zs, z0, ts)[1])
        self.tie_mass = saved
        vidx, vrow = self._votes_of(ts)
        a, w0 = self.d.ann[vidx], w0t[vrow]
        num = np.bincount(a, w0 * (self.d.out[vidx] == TIE), minlength=A)
        den = np.bincount(a, w0, minlength=A)
        return np.where(den > 0.5, (num + 1.0) / (den + 2.0), self.theta)


LAPSE_GRID = (0.0, 0.04, 0.08, 0.12, 0.18, 0.25, 0.35, 0.45, 0.6, 0.8)
LAPSE_VOTES = 400  # sampled votes per annotator the lapse grid is fitted on
NU_MAX = 1.0  # Davidson's nu at most 1 (a tie at d = 0 no likelier than each side): beyond, ties are true ties
LAPSE_TIE_GRID = (0.0, 0.1, 1 / 3, 0.6)
BETA_FACTORS = (0.5, 1.0, 2.0, 4.0)
DECISIVE = 0.9  # a vote's cavity this sure of one side: the others decide the triplet (:meth:`lapse_moments`)


def _log_mean(q: F64, p: F64) -> F64:
    """log sum_g q_g p_g per row (``q`` normalised cell weights, ``p`` a vote's probability per cell), float64."""
    with np.errstate(divide="ignore"):
        return np.log(np.einsum("ij,ij->i", q, p).astype(np.float64))


def _row_sums(rows: I64, x: F64, n_rows: int) -> F64:
    """Sum of the rows of ``x`` by ``rows`` (sorted): a sparse (n_rows, len(x)) 0/1 matrix times ``x``
    (np.add.reduceat along axis 0 was 60x slower)."""
    from scipy.sparse import csr_matrix

    if not len(rows):
        return np.zeros((n_rows, x.shape[1]), dtype=x.dtype)
    indptr = np.searchsorted(rows, np.arange(n_rows + 1))
    agg = csr_matrix((np.ones(len(rows), dtype=x.dtype), np.arange(len(rows)), indptr), shape=(n_rows, len(rows)))
    return np.asarray(agg @ x, dtype=x.dtype)


def vote_prob(scale: F64, grid: F64, out: I64, nu: F64) -> NDArray[np.float32]:
    """P(vote | d) (float32) on each row's grid, Davidson with h = scale * d (``scale`` = beta / 2 per row).

    One exp per cell: with t = -h for "first", h for "second", -|h| for a tie (clipped to +-30, as
    :func:`.davidson.vote_log_lik_fast`) and E = e^t, P(side) = 1 / (1 + E (E + nu)) and P(tie) = nu E / (same).
    """
    sgn = np.where(out == SECOND, 1.0, -1.0) * scale
    t = sgn.astype(np.float32)[:, None] * grid.astype(np.float32, copy=False)
    tie = out == TIE
    if tie.any():
        t[tie] = -np.abs(t[tie])
    np.minimum(t, np.float32(30.0), out=t)
    np.maximum(t, np.float32(-30.0), out=t)
    np.exp(t, out=t)
    nu32 = np.asarray(nu, dtype=np.float32)[:, None]
    p = t + nu32
    p *= t
    p += np.float32(1.0)
    np.reciprocal(p, out=p)
    if tie.any():
        p[tie] *= nu32[tie] * t[tie]
    return p


def _first_per_group(g: I64, k: int) -> NDArray[np.bool_]:
    """Mask of the first ``k`` entries of each value of ``g`` (in order)."""
    order = np.argsort(g.astype(np.int16) if len(g) and g.max() < 2**15 else g, kind="stable")  # radix, same order
    gs = g[order]
    rank = np.arange(len(gs)) - np.searchsorted(gs, gs, side="left")
    keep = np.zeros(len(g), dtype=bool)
    keep[order[rank < k]] = True
    return keep


def lapse_log_prob(out: I64, kappa: F64) -> F64:
    """log P(vote | a lapse): ``kappa`` for "tie", (1 - kappa) / 2 for either side."""
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(out == TIE, np.log(kappa), np.log((1.0 - kappa) / 2.0)), dtype=np.float64)


def _log_lik_at_zero(out: I64, theta: F64) -> F64:
    """log P(vote | a true tie): theta for "tie", (1 - theta) / 2 for first or second."""
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(out == TIE, np.log(theta), np.log((1.0 - theta) / 2.0)), dtype=np.float64)


def beta_newton(
    loo: Loo,
    out: I64,
    ann: I64,
    lb: F64,
    free: NDArray[np.bool_],
    nu: F64,
    prior_sd: float,
    theta: F64,
    iters: int = 4,
    lapse: F64 | None = None,
    lapse_tie: F64 | None = None,
) -> tuple[F64, F64]:
    """log beta_j maximising sum over j's sampled votes of log P(vote | the rest) - lb^2 / (2 prior_sd^2).

    Newton with central differences, all annotators at once; returns (log beta, curvature incl. prior)."""
    grid, q = loo.grid, loo.q
    spike = loo.lw0 + _log_lik_at_zero(out, theta[ann])  # a true tie's vote does not depend on beta
    A = len(lb)
    lb = lb.copy()
    nu_v = nu[ann]
    curv = np.full(A, -1 / prior_sd**2)

    def f(x: F64) -> F64:
        slab = _log_mean(q, vote_prob(0.5 * np.exp(x[ann]), grid, out, nu_v))
        if lapse is not None and lapse_tie is not None and np.any(lapse > 0):
            lam = lapse[ann]
            with np.errstate(divide="ignore"):
                slab = np.logaddexp(np.log1p(-lam) + slab, np.log(lam) + lapse_log_prob(out, lapse_tie[ann]))
        ll = np.logaddexp(loo.lws + slab, spike)
        return np.bincount(ann, ll, minlength=A) - 0.5 * x**2 / prior_sd**2

    e = 0.05
    for _ in range(iters):
        f0, fp, fm = f(lb), f(lb + e), f(lb - e)
        g1, g2 = (fp - fm) / (2 * e), (fp - 2 * f0 + fm) / e**2
        step = np.where(g2 < 0, -g1 / np.where(g2 < 0, g2, -1.0), np.sign(g1) * 0.5)
        step = np.where(free, np.clip(step, -1.0, 1.0), 0.0)
        lb = np.clip(lb + step, -6.0, 3.0)
        curv = np.where(g2 < 0, g2, -1 / prior_sd**2)
        if np.max(np.abs(step)) < 1e-3:
            break
    return lb, curv
