"""The Bradley-Terry/Davidson/Luce negative log posterior and its gradient on arrays (for :mod:`.bt`).

Parameters theta = (scores, free log beta, log nu); see :mod:`.bt` for the model.  The pass over
the pairwise comparisons runs in place in buffers allocated once per problem.
"""

from __future__ import annotations

import math

import numpy as np

LOG_BETA_BOUNDS = (-10.0, 5.0)
LOG_NU_BOUNDS = (-20.0, 5.0)


# --------------------------------------------------------------------------- objective


def _e1_zr(e, g, nu_):
    """In place: ``e`` = |h| -> e1 = exp(-|h|); ``g`` <- Zr = 1 + e1 (e1 + nu) (Davidson's normaliser / e^|h|)."""
    np.negative(e, out=e)
    np.exp(e, out=e)
    if nu_:
        np.add(e, nu_, out=g)
        np.multiply(g, e, out=g)
    else:
        np.multiply(e, e, out=g)
    np.add(g, 1.0, out=g)


class _Problem:
    """Negative log posterior and gradient on arrays; parameters theta = (s, log beta_free, log nu)."""

    def __init__(self, n, A, w, lo_, tie, ann, wt, ch, prior_scale, beta_prior, fit_beta_mask, beta_fixed, fit_nu,
                 nu_fixed):
        self.n, self.A = n, A
        self.w, self.l, self.tie, self.ann, self.wt = w, lo_, tie, ann, wt
        self.ch = ch
        self.prec_s = 1.0 / prior_scale**2 if prior_scale else 0.0
        self.prec_b = 1.0 / beta_prior**2 if beta_prior else 0.0
        self.free_b = np.flatnonzero(fit_beta_mask)
        self.log_beta = np.log(beta_fixed)  # starting / fixed values
        self.fit_nu = fit_nu
        self.log_nu = math.log(nu_fixed) if nu_fixed > 0 else -np.inf
        self.any_tie = tie is not None
        self.tie_f = tie.astype(np.float64) if tie is not None else None
        self.nb = len(self.free_b)
        self.norm_w = None  # vote shares: normalise sum_j w_j beta_j = 1 over the free annotators
        self.dim = n + self.nb + (1 if fit_nu else 0)
        self.single_beta = bool(self.nb == 0 and np.all(beta_fixed == 1.0))  # every beta pinned at 1
        if ch is not None:
            self.set_of = ch.member_set
        self.plain = bool(self.single_beta and not self.any_tie and wt is None and ch is None and not fit_nu)

    def unpack(self, theta):
        s = theta[: self.n]
        lb = self.log_beta.copy()
        if self.nb:
            phi = theta[self.n : self.n + self.nb]
            if self.norm_w is not None:
                mx = phi.max()
                phi = phi - (mx + math.log(float(np.dot(self.norm_w, np.exp(phi - mx)))))
            lb[self.free_b] = phi
        lnu = theta[-1] if self.fit_nu else self.log_nu
        return s, lb, lnu

    def pack(self, s, lb, lnu):
        parts = [np.asarray(s, dtype=np.float64)]
        if self.nb:
            parts.append(lb[self.free_b])
        if self.fit_nu:
            parts.append(np.array([lnu]))
        return np.concatenate(parts)

    def _plain(self, s):
        """Fast path: one annotator, beta = 1, no ties, no weights, no Luce sets (in-place buffers)."""
        m = len(self.w)
        if m == 0:
            return 0.0, np.zeros(self.n)
        if not hasattr(self, "_buf"):
            B = 256  # sum log(1 + e) as the log of products of B factors in [1, 2] (no overflow)
            pad = -m % B
            self._buf = (np.empty(m), np.empty(m), np.ones(m + pad), B)
        d, t, u, B = self._buf
        np.take(s, self.w, out=d)
        np.take(s, self.l, out=t)
        np.subtract(d, t, out=d)
        np.abs(d, out=t)
        relu = 0.5 * (float(t.sum()) - float(d.sum()))  # sum max(-d, 0)
        np.negative(t, out=t)
        np.exp(t, out=t)  # e = exp(-|d|)
        np.add(t, 1.0, out=u[:m])
        nll = relu + float(np.log(np.multiply.reduce(u.reshape(-1, B), axis=1)).sum())
        # q = 1 - sigmoid(d) = e/(1+e) if d >= 0 else 1/(1+e)
        np.divide(t, u[:m], out=t)
        np.subtract(0.5, t, out=t)
        np.copysign(t, d, out=t)
        np.subtract(0.5, t, out=t)
        gs = np.bincount(self.l, t, minlength=self.n)
        gs -= np.bincount(self.w, t, minlength=self.n)
        return nll, gs

    def value_grad(self, theta, *, want_ll=False):
        if self.plain:
            nll, gs = self._plain(theta)
            ll = -nll
            if self.prec_s:
                nll += 0.5 * self.prec_s * float(theta @ theta)
                gs += self.prec_s * theta
            return (nll, gs, ll) if want_ll else (nll, gs)
        s, lb, lnu = self.unpack(theta)
        n, A = self.n, self.A
        gs = np.zeros(n)
        glb = np.zeros(max(A, 1))
        glnu = 0.0
        nll = 0.0
        beta = np.exp(lb)
        if len(self.w):
            nll_p, glnu = self._pairwise(s, beta, lnu, gs, glb)
            nll += nll_p
        ch = self.ch
        if ch is not None:
            bset = beta[ch.ann]
            bm = bset[self.set_of]
            u = bm * s[ch.member_item]
            mx = np.maximum.reduceat(u, ch.starts)
            e = np.exp(u - mx[self.set_of])
            Zs = np.add.reduceat(e, ch.starts)
            lse = mx + np.log(Zs)
            nll += float((lse - u[ch.starts]).sum())
            p = e / Zs[self.set_of]
            du = p - ch.is_chosen  # d nll / du
            gs += np.bincount(ch.member_item, du * bm, minlength=n)
            if self.nb:
                glb += np.bincount(ch.ann[self.set_of], du * u, minlength=len(glb))
        ll = -nll
        if self.prec_s:
            nll += 0.5 * self.prec_s * float(s @ s)
            gs += self.prec_s * s
        parts = [gs]
        if self.nb:
            lbf = lb[self.free_b]
            nll += 0.5 * self.prec_b * float(lbf @ lbf)
            gphi = glb[self.free_b] + self.prec_b * lbf
            if self.norm_w is not None:
                gphi = gphi - gphi.sum() * (self.norm_w * np.exp(lbf))
            parts.append(gphi)
        if self.fit_nu:
            parts.append(np.array([glnu]))
        g = np.concatenate(parts) if len(parts) > 1 else gs
        if want_ll:
            return nll, g, ll
        return nll, g

    def _work(self, k):
        """``k`` scratch arrays of the comparisons' length, allocated once per problem: the
        pass over the comparisons runs in place (fresh 8 MB temporaries per evaluation cost
        more in page faults than the arithmetic)."""
        ws = self.__dict__.setdefault("_ws", [])
        while len(ws) < k:
            ws.append(np.empty(len(self.w)))
        return ws

    def _pair_consts(self, davidson):
        """Per-comparison constants of the pairwise pass (cached): float win indicator, the same
        times the weight, the weighted number of ties.  Without Davidson's term (nu = 0) a tie
        counts as a win of ``winners[k]``."""
        pcs = self.__dict__.setdefault("_pc", {})
        if davidson not in pcs:
            wt = self.wt
            if davidson and self.tie is not None:
                win = (~self.tie).astype(np.float64)
                tie_f = self.tie.astype(np.float64)
                ntie = float(np.dot(wt, tie_f)) if wt is not None else float(tie_f.sum())
            else:
                win, ntie = np.ones(len(self.w)), 0.0
            win_w = win * wt if wt is not None else win
            pcs[davidson] = (win, win_w, ntie)
        return pcs[davidson]

    def _half_margin(self, s, beta, d, tmp, bb):
        """h = beta (s_w - s_l) / 2 per comparison, into ``d`` (``tmp``, ``bb``: scratch)."""
        np.take(s, self.w, out=d)
        np.take(s, self.l, out=tmp)
        np.subtract(d, tmp, out=d)
        if not self.single_beta:
            np.take(0.5 * beta, self.ann, out=bb)
            np.multiply(d, bb, out=d)
        else:
            np.multiply(d, 0.5, out=d)

    def _pairwise(self, s, beta, lnu, gs, glb, want_s=True):
        """Pairwise comparisons' negative log-likelihood; adds d/ds into ``gs`` and d/d log beta
        into ``glb`` (when beta is fitted); returns ``(nll, d nll / d log nu)``.

        In terms of h = beta (s_w - s_l) / 2: a win has nll = |h| - h + log Zr, a tie
        |h| - log nu + log Zr, with Zr = 1 + e1 (e1 + nu), e1 = exp(-|h|) (Davidson; nu = 0
        is the logistic model); d nll / dh = sign(h) (1 - e1^2) / Zr - [win] and
        d nll / d log nu = nu e1 / Zr - [tie].  One exp and one log per comparison."""
        n, wt = self.n, self.wt
        d, e, r, g, bb = self._work(5)[:5]
        davidson = self.any_tie and lnu > -np.inf
        win, win_w, ntie = self._pair_consts(davidson)
        self._half_margin(s, beta, d, e, bb)  # d = h
        nu_ = math.exp(lnu) if davidson else 0.0
        np.abs(d, out=e)
        nll = float(np.dot(wt, e)) if wt is not None else float(e.sum())
        nll -= float(np.dot(win_w, d))
        _e1_zr(e, g, nu_)  # e = e1, g = Zr
        np.log(g, out=r)
        nll += float(np.dot(wt, r)) if wt is not None else float(r.sum())
        np.reciprocal(g, out=g)  # 1 / Zr
        glnu = 0.0
        if davidson:
            nll -= lnu * ntie
            if self.fit_nu:
                np.multiply(e, g, out=r)  # pT / nu
                glnu = nu_ * (float(np.dot(wt, r)) if wt is not None else float(r.sum())) - ntie
        np.multiply(e, e, out=r)
        np.subtract(1.0, r, out=r)
        np.multiply(r, g, out=r)
        np.copysign(r, d, out=r)  # pA - pB
        np.subtract(r, win, out=r)  # d nll / dh
        if wt is not None:
            np.multiply(r, wt, out=r)
        if self.nb:
            np.multiply(r, d, out=g)  # d nll / d log beta = dh * h
            glb += np.bincount(self.ann, g, minlength=len(glb))
        if not want_s:
            return nll, glnu
        if not self.single_beta:
            np.multiply(r, bb, out=r)
        else:
            np.multiply(r, 0.5, out=r)
        gs += np.bincount(self.w, r, minlength=n)
        gs -= np.bincount(self.l, r, minlength=n)
        return nll, glnu

    def fisher_diag(self, theta):
        """Diagonal of the expected Hessian of the negative log posterior (for preconditioning)."""
        s, lb, lnu = self.unpack(theta)
        n = self.n
        beta = np.exp(lb)
        hs = np.zeros(n)
        hb = np.zeros(max(self.A, 1))
        hnu = 0.0
        if len(self.w):
            hnu = self._pair_fisher(s, beta, lnu, hs, hb)
        ch = self.ch
        if ch is not None:
            bm = beta[ch.ann][self.set_of]
            u = bm * s[ch.member_item]
            mx = np.maximum.reduceat(u, ch.starts)
            e = np.exp(u - mx[self.set_of])
            p = e / np.add.reduceat(e, ch.starts)[self.set_of]
            hs += np.bincount(ch.member_item, bm**2 * p * (1 - p), minlength=n)
            if self.nb:
                mu = np.add.reduceat(p * u, ch.starts)[self.set_of]
                hb += np.bincount(ch.ann[self.set_of], p * (u - mu) ** 2, minlength=len(hb))
        hs += self.prec_s
        parts = [hs]
        if self.nb:
            parts.append(hb[self.free_b] + self.prec_b)
        if self.fit_nu:
            parts.append(np.array([hnu]))
        return np.concatenate(parts)

    def _pair_fisher(self, s, beta, lnu, hs, hb, want_s=True):
        """Pairwise part of :meth:`fisher_diag` (in place, like :meth:`_pairwise`): adds the
        scores' diagonal into ``hs`` and log beta's into ``hb``; returns log nu's.

        With z = 2h = beta (s_w - s_l): the information in z is
        c = (pA + pB - (pA - pB)^2) / 4, pA + pB = (1 + e1^2) / Zr, |pA - pB| = (1 - e1^2) / Zr."""
        n, wt = self.n, self.wt
        d, e, r, g, bb = self._work(5)[:5]
        self._half_margin(s, beta, d, e, bb)  # d = h
        davidson = self.any_tie and lnu > -np.inf
        nu_ = math.exp(lnu) if davidson else 0.0
        np.abs(d, out=e)
        _e1_zr(e, g, nu_)  # e = e1, g = Zr
        np.reciprocal(g, out=g)  # 1 / Zr
        hnu = 0.0
        if davidson:
            t = self._work(6)[5]
            np.multiply(e, g, out=r)
            np.multiply(r, nu_, out=r)  # pT
            np.subtract(1.0, r, out=t)
            np.multiply(t, r, out=t)
            hnu = float(np.dot(wt, t)) if wt is not None else float(t.sum())
        np.multiply(e, e, out=e)  # e1^2
        np.subtract(1.0, e, out=r)
        np.multiply(r, g, out=r)
        np.multiply(r, r, out=r)  # (pA - pB)^2
        np.add(e, 1.0, out=e)
        np.multiply(e, g, out=e)  # pA + pB
        np.subtract(e, r, out=e)
        np.multiply(e, 0.25, out=e)  # c
        if wt is not None:
            np.multiply(e, wt, out=e)
        if self.nb:
            np.multiply(d, d, out=r)
            np.multiply(r, e, out=r)
            hb += 4.0 * np.bincount(self.ann, r, minlength=len(hb))  # c z^2
        if not want_s:
            return hnu
        if not self.single_beta:
            np.multiply(bb, bb, out=bb)
            np.multiply(e, bb, out=e)
            np.multiply(e, 4.0, out=e)  # c beta^2
        hs += np.bincount(self.w, e, minlength=n)
        hs += np.bincount(self.l, e, minlength=n)
        return hnu

    def bounds(self) -> list[tuple[float | None, float | None]]:
        b: list[tuple[float | None, float | None]] = [(None, None)] * self.n
        b += [LOG_BETA_BOUNDS] * self.nb
        if self.fit_nu:
            b += [LOG_NU_BOUNDS]
        return b
