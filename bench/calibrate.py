"""Calibration benchmark: fit time and recovery of the truth, ours vs peers, side by side.

    .venv/bin/python bench/calibrate.py [--quick] [--with-slow-peers] [--seed 0]

Case A: 1M pairwise comparisons on 10k items, one annotator, no ties (the plain
Bradley-Terry case).  Case B: 1M triplet votes on ~100k pair-items {a, x} (2000
documents x 50 candidates) from 50 simulated annotators, 20% noisy (beta 0.2) and 10%
adversarial (beta -1), Davidson ties (nu 0.1), 3 votes per triplet.

Methods:
* ours plain: ``bt.bradley_terry`` with one beta, no prior (case B: ties dropped and a prior
  sd 3 on the scores: sparse triplet data has items that win every comparison, whose
  maximum-likelihood score is infinite);
* ours full: per-annotator beta (prior sd 1 on log beta), Davidson ties, prior sd 3 on scores,
  ``tol=1e-3`` (optimisation error below 1e-3 standard errors; the default 1e-5 changes no
  printed digit and takes ~1.5x the iterations);
* Arena recipe: scikit-learn ``LogisticRegression`` (no intercept, no penalty, lbfgs) on the
  sparse +1/-1 design of the Chatbot-Arena notebook, presented sides as in the data, ties
  dropped, one annotator;
* crowd-kit ``BradleyTerry`` (MM, n_iter=100; ties dropped; it builds a dense n x n win
  matrix, so case B's ~100k items do not fit in memory: reported as failed);
* choix ``ilsr_pairwise`` (alpha 1e-6): ~150 s CPU on case A (its cost grows with the number of
  items, not comparisons: a subsample does not help), so it runs only with
  ``--with-slow-peers`` (case A) or ``--quick``; case B's ~100k items are out of its reach, and
  even ``--quick``'s 10k-item case B takes it ~13 min (``--quick --with-slow-peers`` runs it);
* majority vote: share of wins per item (case B also: the majority label per triplet).

Measured on this 2-CPU box (load average 0.6; 2026-11-28, after the in-place pairwise pass):

    case A  ours plain 0.26 s (Spearman .9860, 8 iterations, with stderr) | Arena recipe 0.96 s (.9860;
            4.5x our CPU) | crowd-kit 7.0 s (.9847; 27x) | choix ilsr 94 s wall, 151 s CPU (.9860; 581x)
    case B  ours full 2.7 s (Spearman .8616, triplet accuracy .8789) | Arena recipe 2.1 s wall, 4.0 s CPU
            (.6715 / .8277) | crowd-kit: MemoryError (dense 98,669^2) | choix: out of reach
            --quick case B (9,662 items): ours .13 s (.8518 / .8785) | Arena .26 s (.5159 / .8293) |
            crowd-kit 5.8 s (.7642 / .8364) | choix 779 s (.6050 / .8302)

Reported: wall time and CPU time of this process (ratios use CPU time), Spearman to the true scores, triplet
label accuracy against the true order (case B), and ratios to our fit.  The machine's load
average is printed: on a shared machine the absolute times move, the ratios less.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from condsim_annot.calibrate.agreement import majority_vote, win_rate  # noqa: E402
from condsim_annot.calibrate.bt import bradley_terry  # noqa: E402
from condsim_annot.calibrate.simulate import simulate_pairwise, simulate_triplets  # noqa: E402


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def arena(n, left, right, left_wins):
    """Chatbot-Arena recipe: logistic regression on a sparse +-1 design (no ties)."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    m = len(left)
    rows = np.repeat(np.arange(m), 2)
    cols = np.stack([left, right], 1).ravel()
    vals = np.tile([1.0, -1.0], m)
    X = csr_matrix((vals, (rows, cols)), shape=(m, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(fit_intercept=False, penalty=None, tol=1e-6, max_iter=1000)
        lr.fit(X, left_wins.astype(int))
    return lr.coef_[0]


def crowdkit_bt(n, winners, losers, workers=None):
    import pandas as pd
    from crowdkit.aggregation import BradleyTerry

    df = pd.DataFrame(
        {
            "worker": workers if workers is not None else np.zeros(len(winners), dtype=int),
            "left": winners,
            "right": losers,
            "label": winners,
        }
    )
    sc = BradleyTerry(n_iter=100).fit(df).scores_
    out = np.full(n, np.nan)
    out[sc.index.to_numpy(dtype=np.int64)] = np.log(np.maximum(sc.to_numpy(dtype=float), 1e-300))
    return out


def choix_ilsr(n, winners, losers):
    import choix

    return choix.ilsr_pairwise(n, np.stack([winners, losers], 1), alpha=1e-6, tol=1e-8, max_iter=1000)


def rho(est, truth):
    ok = np.isfinite(est)
    return float(spearmanr(est[ok], truth[ok])[0])


def row(name, t, c, r, acc=None, ref=None, note=""):
    ratio = f"{c / ref:7.2f}x" if ref else "    -   "  # CPU time ratio: steadier on a shared machine
    a = f"{acc:8.4f}" if acc is not None else "       -"
    print(f"  {name:<34}{t:9.2f} s{c:9.2f} s  {ratio}  {r:8.4f}  {a}  {note}")


def header(extra="triplet acc"):
    print(f"  {'method':<34}{'wall':>11}{'cpu':>11}  {'cpu/ours':>8}  {'spearman':>8}  {extra:>8}")


def case_a(args):
    n, m = (2000, 100_000) if args.quick else (10_000, 1_000_000)
    print(f"\nCase A: {m:,} pairwise comparisons on {n:,} items, one annotator, no ties")
    sim = simulate_pairwise(n, m, seed=args.seed)
    truth = sim.true_scores
    w, lo_ = sim.winners, sim.losers
    header("")
    res, t_ours, c_ours = timed(lambda: bradley_terry(w, lo_, n_items=n))
    row("ours plain (with stderr)", t_ours, c_ours, rho(res.scores, truth), note=f"{res.n_iter} iterations")
    res2, t, c = timed(lambda: bradley_terry(w, lo_, n_items=n, compute_stderr=False))
    row("ours plain (scores only)", t, c, rho(res2.scores, truth), ref=c_ours)
    res3, t, c = timed(lambda: bradley_terry(w, lo_, n_items=n, prior_scale=3.0))
    row("ours with prior (sd 3)", t, c, rho(res3.scores, truth), ref=c_ours)
    left_wins = sim.winners == sim.left
    est, t, c = timed(lambda: arena(n, sim.left, sim.right, left_wins))
    row("Arena recipe (sklearn LR)", t, c, rho(est, truth), ref=c_ours)
    est, t, c = timed(lambda: crowdkit_bt(n, w, lo_))
    row("crowd-kit BradleyTerry", t, c, rho(est, truth), ref=c_ours)
    if args.with_slow_peers or args.quick:
        est, t, c = timed(lambda: choix_ilsr(n, w, lo_))
        row("choix ilsr_pairwise", t, c, rho(est, truth), ref=c_ours)
    else:
        print(f"  {'choix ilsr_pairwise':<34}{'skipped':>11}  (~150 s and more here: --with-slow-peers runs it)")
    est, t, c = timed(lambda: win_rate(w, lo_, n))
    row("majority vote (win rate)", t, c, rho(est, truth), ref=c_ours)


def case_b(args):
    n_docs, n_cand, m = (400, 25, 100_000) if args.quick else (2000, 50, 1_000_000)
    sim = simulate_triplets(
        n_docs, n_cand, m, n_annotators=50, votes_per_triplet=3, noisy=0.2, adversarial=0.1, nu=0.1, seed=args.seed
    )
    n = sim.n_items
    print(
        f"\nCase B: {m:,} triplet votes on {n:,} pair-items, 50 annotators "
        f"({(sim.kinds == 'noisy').sum()} noisy, {(sim.kinds == 'adversarial').sum()} adversarial), "
        f"{sim.choice.__eq__(2).mean():.1%} ties"
    )
    truth = sim.true_scores
    w, lo_, ties, ann = sim.comparisons()
    unit = (sim.anchor.astype(np.int64) * n_docs + sim.first) * n_docs + sim.second
    uid, first_idx = np.unique(unit, return_index=True)
    i1, i2 = sim.item_first[first_idx], sim.item_second[first_idx]
    true_first = truth[i1] > truth[i2]

    def acc(scores):
        return float(np.mean((scores[i1] > scores[i2]) == true_first))

    header()
    full, t_ours, c_ours = timed(
        lambda: bradley_terry(
            w, lo_, ties=ties, annotators=ann, n_items=n, n_annotators=50, prior_scale=3.0, beta_prior=1.0, tol=1e-3
        )
    )
    row(
        "ours full (beta_j, ties, priors)",
        t_ours,
        c_ours,
        rho(full.scores, truth),
        acc(full.scores),
        note=f"{full.n_iter} iterations, nu {full.nu:.3f}",
    )
    keep = ~ties
    wk, lk = w[keep], lo_[keep]
    plain, t, c = timed(lambda: bradley_terry(wk, lk, n_items=n, prior_scale=3.0))
    row(
        "ours plain (beta 1, no ties, prior)",
        t,
        c,
        rho(plain.scores, truth),
        acc(plain.scores),
        ref=c_ours,
        note=f"{plain.n_iter} iterations",
    )
    first_shown = np.where(sim.swapped, sim.item_second, sim.item_first)[keep]
    second_shown = np.where(sim.swapped, sim.item_first, sim.item_second)[keep]
    est, t, c = timed(lambda: arena(n, first_shown, second_shown, wk == first_shown))
    row("Arena recipe (sklearn LR)", t, c, rho(est, truth), acc(est), ref=c_ours)
    try:
        est, t, c = timed(lambda: crowdkit_bt(n, wk, lk, ann[keep]))
        row("crowd-kit BradleyTerry", t, c, rho(est, truth), acc(np.nan_to_num(est, nan=-1e9)), ref=c_ours)
    except MemoryError as e:  # it builds a dense n x n win matrix
        print(f"  {'crowd-kit BradleyTerry':<34}{'failed':>11}  MemoryError: {str(e)[:70]}")
    if args.quick and args.with_slow_peers:
        est, t, c = timed(lambda: choix_ilsr(n, wk, lk))
        row("choix ilsr_pairwise", t, c, rho(est, truth), acc(est), ref=c_ours)
    elif args.quick:
        print(
            f"  {'choix ilsr_pairwise':<34}{'skipped':>11}  (~13 min on {n:,} items: --quick --with-slow-peers runs it)"
        )
    else:
        print(
            f"  {'choix ilsr_pairwise':<34}{'skipped':>11}  (dense n x n stationary solve: {n:,} items is out "
            f"of reach; see --quick --with-slow-peers)"
        )
    est, t, c = timed(lambda: win_rate(w, lo_, n, ties=ties))
    row("majority vote (win rate)", t, c, rho(est, truth), acc(np.nan_to_num(est, nan=0.5)), ref=c_ours)
    (_, lab, _), t, c = timed(lambda: majority_vote(unit, sim.choice))
    mv = np.array([0.5 if x is None or x == 2 else float(x == 0) for x in lab])
    mv_acc = float(np.mean(np.where(mv == 0.5, 0.5, (mv == 1.0) == true_first)))
    print(
        f"  {'majority vote per triplet (label)':<34}{t:9.2f} s{c:9.2f} s  {'':8}  {'':>8}  {mv_acc:8.4f}  "
        f"undecided triplets count 1/2"
    )
    kinds = sim.kinds
    print(
        "  fitted beta by kind (true beta): "
        + ", ".join(
            f"{k} {np.median(full.beta[kinds == k]):.2f} (median of {np.sum(kinds == k)}; true "
            f"{np.median(sim.true_beta[kinds == k]):+.2f})"
            for k in ("good", "noisy", "adversarial")
        )
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller cases (a smoke run)")
    ap.add_argument("--with-slow-peers", action="store_true", help="choix on the full data (minutes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", choices=["a", "b", "both"], default="both")
    args = ap.parse_args(argv)
    la = os.getloadavg()
    print(
        f"calibrate benchmark  (load average {la[0]:.1f} on {os.cpu_count()} CPUs; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')})"
    )
    if args.case in ("a", "both"):
        case_a(args)
    if args.case in ("b", "both"):
        case_b(args)


if __name__ == "__main__":
    main()
