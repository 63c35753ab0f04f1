"""``train()``: gold triplets -> a criterion adapter (and optionally a fine-tuned model), measured held-out.

1. Gold: the latest calibration run's gold triplets (:func:`.data.load_gold`), each weighted by
   its label probability; never the votes.
2. Plan: with enough gold one anchor-grouped train/test split; with scarce gold (fewer than
   ``kfold_below``) k-fold by anchor, so every triplet is tested once by a model that never saw
   its anchor.  Inside each training part, 3 inner anchor-grouped folds choose the number of
   steps among a few (25 ... 300, by their mean held-out accuracy; a step-by-step argmax of a noisy
   curve picked lucky steps) and, given ``candidates``, the hyper-parameters: no test triplet is seen.
3. Evaluate on the held-out triplets, side by side: the base embedding (q . d), BM25, the
   adapter, the fine-tuned model (``full``; trained on the first split) and LM judges where
   they voted; each on all held-out gold (biased: the proposer picked them) and on the audit
   slice (unbiased).  CPU time (process time) and encoder calls are measured.
   The adapter's paired difference to each peer (same triplets, paired anchor bootstrap) is reported.
4. Store: the adapter refitted on all gold (steps chosen the same way, by inner folds), with its
   hyper-parameters and the held-out metrics, in ``trainedmodel``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..db import Store
from ..errors import CondsimError
from .adapter import BilinearAdapter, TripletArrays
from .data import MIN_GOLD, CachedEmbeddings, GoldSet, bm25_margins, judge_margins, load_gold
from .evaluate import ALL_LABEL, AUDIT_LABEL, accuracy_report, kfold_by_anchor, paired_report, split_by_anchor
from .tables import TrainedModel

Say = Callable[[str], Any]


@dataclass
class TrainOptions:
    model: str | None = None
    cache_dir: str | None = None
    rank: int = 16
    bias: bool = False
    candidates: list[dict] = field(default_factory=list)  # hyper-parameter sets the inner folds choose among
    ensemble: bool = False
    step_grid: tuple[int, ...] = (25, 50, 100, 200, 300)  # step counts the inner folds choose among (): any
    temperature: float = 0.1
    l2: float = 1e-2
    lr: float = 0.01
    max_steps: int = 300
    patience: int = 300
    test_fraction: float = 0.3
    kfold: int = 5
    kfold_below: int = 300
    derived: bool = False
    min_gold: int = MIN_GOLD
    seed: int = 0
    bootstrap: int = 1000
    full: bool = False
    epochs: int = 1
    out: str | None = None
    batch_size: int = 16
    full_max_steps: int | None = None
    full_folds: bool = False  # fine-tune on every split of the plan (k-fold too), not only the first
    full_cache: str | None = None  # folder caching each split's fine-tune result (benchmarks re-run the adapter)
    write: bool = True
    extra: dict = field(default_factory=dict)

    def adapter(self, **kw: Any) -> BilinearAdapter:
        """An unfitted adapter with these options; ``kw`` overrides (a candidate's hyper-parameters, steps)."""
        hp = dict(
            rank=self.rank,
            bias=self.bias,
            temperature=self.temperature,
            l2=self.l2,
            lr=self.lr,
            max_steps=self.max_steps,
            patience=self.patience,
            seed=self.seed,
        )
        return BilinearAdapter(**{**hp, **kw})


def step_curve(
    opt: TrainOptions, inner: list[tuple[np.ndarray, np.ndarray]], arr: TripletArrays, cand: dict
) -> np.ndarray:
    """The held-out *accuracy* curve of candidate ``cand``, averaged over the inner folds, smoothed over 9 steps.
    (Accuracy, not loss: the held-out loss turns up long before the ranking stops improving, a few confidently
    wrong triplets dominate it.)"""
    curves = []
    for tr, va in inner:
        ad = opt.adapter(**cand, patience=opt.max_steps + 1).fit(arr.take(tr), arr.take(va))
        curves.append([acc for _step, _loss, acc in ad.history_][: opt.max_steps])
    n = min(len(c) for c in curves)
    return np.convolve(np.mean([c[:n] for c in curves], axis=0), np.ones(9) / 9, mode="same")


def fit_adapter(
    opt: TrainOptions, anchors: np.ndarray, arr: TripletArrays, *, seed: int = 0
) -> tuple[BilinearAdapter, dict]:
    """Fit on the training part alone: 3 anchor-grouped inner folds choose the candidate hyper-parameters
    (``opt.candidates``) and the number of steps (best mean held-out accuracy); then the chosen adapter is fitted
    on each inner fold's training part and on the whole part, and (``opt.ensemble``) the fits are averaged
    into one adapter (:meth:`BilinearAdapter.average`: bagging over anchors, less variance).  No test triplet
    is seen.  Returns (adapter, {"candidate", "steps", "inner_accuracy"})."""
    if len(np.unique(anchors)) < 6:
        return opt.adapter().fit(arr), {"candidate": {}, "steps": opt.max_steps, "inner_accuracy": None}
    inner = kfold_by_anchor(anchors, 3, seed=seed)
    best: tuple[float, int, dict] | None = None
    for cand in opt.candidates or [{}]:
        curve = step_curve(opt, inner, arr, cand)
        if opt.step_grid:  # a few step counts (each the mean over its window): a noisy curve picks no lucky step
            grid = [g for g in opt.step_grid if g <= len(curve)] or [len(curve)]
            accs = [float(curve[g - 1]) for g in grid]
            k = grid[int(np.argmax(accs))] - 1
        else:
            k = int(np.argmax(curve))
        if best is None or curve[k] > best[0] + 1e-9:
            best = (float(curve[k]), k + 1, cand)
    assert best is not None
    acc, steps, cand = best
    full = opt.adapter(**cand, max_steps=steps).fit(arr)
    if opt.ensemble:
        members = [opt.adapter(**cand, max_steps=steps).fit(arr.take(tr)) for tr, _va in inner]
        full = BilinearAdapter.average([*members, full])
        full.best_step_ = steps
    return full, {"candidate": cand, "steps": steps, "inner_accuracy": round(acc, 4)}


def _fit_fold(opt: TrainOptions, gold: GoldSet, arr: TripletArrays, train: np.ndarray, fold: int) -> BilinearAdapter:
    """Fit on ``train`` rows (:func:`fit_adapter`)."""
    return fit_adapter(opt, gold.anchor[train], arr.take(train), seed=opt.seed + 1000 + fold)[0]


def plan_splits(gold: GoldSet, opt: TrainOptions) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    """k-fold by anchor when gold is scarce (one fine-tune per fold only with ``full_folds``), else one split."""
    if len(gold) < opt.kfold_below and (opt.full_folds or not opt.full):
        return f"{opt.kfold}-fold by anchor", kfold_by_anchor(gold.anchor, opt.kfold, seed=opt.seed)
    return f"one split by anchor ({opt.test_fraction:.0%} of anchors held out)", [
        split_by_anchor(gold.anchor, opt.test_fraction, seed=opt.seed)
    ]


def _cpu() -> float:
    return time.process_time()


def train(store: Store, criterion: str, opt: TrainOptions | None = None, *, say: Say | None = None) -> dict:
    """Train, evaluate and store; returns the report (``metrics`` as stored, plus ``model_id``)."""
    opt = opt or TrainOptions()
    say = say or (lambda _m: None)
    gold = load_gold(store, criterion, derived=opt.derived, min_gold=opt.min_gold)
    emb = CachedEmbeddings(store, model=opt.model, cache_dir=opt.cache_dir)
    t_cpu = _cpu()
    arr = TripletArrays(
        emb.queries(gold.anchor.tolist(), gold.prompt),
        emb.documents(gold.pos.tolist()),
        emb.documents(gold.neg.tolist()),
        gold.y,
    )
    read_cpu = _cpu() - t_cpu
    plan, splits = plan_splits(gold, opt)
    say(
        f"{len(gold)} gold triplets over {len(np.unique(gold.anchor))} anchors (calibration run {gold.run_id}); "
        f"evaluation: {plan}; embeddings: {emb.texts_encoded} texts encoded, the rest read from the cache"
    )
    held = np.concatenate([te for _tr, te in splits])
    margins: dict[str, np.ndarray] = {}
    cpu: dict[str, float] = {}
    t = _cpu()
    ad = np.zeros(len(gold))
    steps = []
    for k, (tr, te) in enumerate(splits):
        fitted = _fit_fold(opt, gold, arr, tr, k)
        steps.append(fitted.best_step_ or opt.max_steps)
        ad[te] = fitted.margins(arr.take(te))
    cpu["adapter"] = _cpu() - t + read_cpu
    margins["adapter"] = ad[held]
    margins["base embedding"] = BilinearAdapter().margins(arr.take(held))
    t = _cpu()
    margins["bm25"] = bm25_margins(store, gold, held, emb.root)
    cpu["bm25"] = _cpu() - t
    full_info, tested = None, None
    if opt.full:
        full_info, ft, tested, cpu["fine-tuned"] = _full(store, gold, splits, opt, say)
        margins["fine-tuned"] = np.nan_to_num(ft[held])
        tested = tested[held]
    results, paired = _evaluate(store, gold, held, margins, opt, tested)
    final, chosen = fit_adapter(opt, gold.anchor, arr, seed=opt.seed + 999)
    metrics = {
        "plan": plan,
        "n_gold": len(gold),
        "n_held_out": int(len(held)),
        "n_audit_held_out": int(gold.audit[held].sum()),
        "labels": {"all": ALL_LABEL, "audit": AUDIT_LABEL},
        "methods": results,
        "paired": paired,
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "encoder_texts_encoded": emb.texts_encoded,
        "encoder_calls": emb.encoder.calls,
        "early_stopping_steps": steps,
        "final_steps": final.best_step_,
        "final_choice": chosen,
    }
    report = {
        "criterion": gold.criterion,
        "criterion_version": gold.criterion_version,
        "calibration_run": gold.run_id,
        "base_model": emb.model_name,
        "hyper_parameters": final.hyper_parameters(),
        "metrics": metrics,
        "full": full_info,
        "model_id": None,
    }
    if opt.write:
        report["model_id"] = _store(store, gold, emb.model_name, final, metrics, full_info, opt)
    return report


def _evaluate(
    store: Store,
    gold: GoldSet,
    held: np.ndarray,
    margins: dict[str, np.ndarray],
    opt: TrainOptions,
    ft_tested: np.ndarray | None,
) -> tuple[list[dict], list[dict]]:
    """Each method's held-out accuracy, and the adapter's paired difference to each peer on the same triplets."""
    anchors, audit = gold.anchor[held], gold.audit[held]
    out, paired = [], []
    for name, m in margins.items():
        mask = ft_tested if name == "fine-tuned" else None  # only the splits it was trained for
        out.append({"method": name, **accuracy_report(m, anchors, audit, B=opt.bootstrap, seed=opt.seed, mask=mask)})
        if name != "adapter":
            rep = paired_report(margins["adapter"], m, anchors, audit, B=opt.bootstrap, seed=opt.seed, mask=mask)
            paired.append({"method": f"adapter - {name}", **rep})
    for judge, (m, answered) in sorted(judge_margins(store, gold, held).items()):
        out.append(
            {
                "method": f"judge:{judge}",
                "note": "its votes helped make the gold labels (optimistic)",
                **accuracy_report(m, anchors, audit, B=opt.bootstrap, seed=opt.seed, mask=answered),
            }
        )
    return out, paired


def _full(
    store: Store, gold: GoldSet, splits: list[tuple[np.ndarray, np.ndarray]], opt: TrainOptions, say: Say
) -> tuple[dict, np.ndarray, np.ndarray, float]:
    """Fine-tune on the first split, or on every split with ``full_folds``: (info of the last, held-out margins
    over all gold rows (NaN where not tested), tested mask, CPU seconds summed over the fine-tunes)."""
    if not opt.out:
        raise CondsimError("--full needs --out FOLDER for the fine-tuned model")
    todo = splits if opt.full_folds else splits[:1]
    margins, tested, cpu_total = np.full(len(gold), np.nan), np.zeros(len(gold), dtype=bool), 0.0
    infos = []
    for k, (tr, te) in enumerate(todo):
        if len(todo) > 1:
            say(f"fine-tune {k + 1}/{len(todo)} ({len(tr)} training triplets)")
        info, m, cpu = _full_split(store, gold, tr, te, opt, say)
        margins[te], tested[te] = m, True
        cpu_total += cpu
        infos.append(info)
    info = dict(infos[-1])
    info["folds"] = len(todo)
    info["cpu_seconds_each"] = [round(i["cpu_seconds"], 3) for i in infos]
    return info, margins, tested, cpu_total


def _full_split(
    store: Store, gold: GoldSet, tr: np.ndarray, te: np.ndarray, opt: TrainOptions, say: Say
) -> tuple[dict, np.ndarray, float]:
    """One fine-tune: (info, held-out margins, CPU seconds), from ``opt.full_cache`` when it was done before."""
    import hashlib
    import json
    from pathlib import Path

    from .finetune import fine_tune, texts_of, triplet_margins

    cached = None
    if opt.full_cache:
        key = json.dumps(
            [
                opt.model,
                opt.epochs,
                opt.batch_size,
                opt.seed,
                opt.full_max_steps,
                gold.prompt,
                [gold.triplet_id[tr].tolist(), gold.pos[tr].tolist()],
                [gold.triplet_id[te].tolist(), gold.pos[te].tolist()],
            ]
        )
        cached = Path(opt.full_cache) / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        if cached.exists():
            got = json.loads(cached.read_text())
            say(f"fine-tune of this split read from {cached} (measured before: {got['info']['cpu_seconds']:.0f} CPU s)")
            return got["info"], np.asarray(got["margins"], dtype=np.float64), float(got["info"]["cpu_seconds"])
    t = _cpu()
    a, p, n = texts_of(store, gold, tr)
    info = fine_tune(
        opt.model,
        a,
        p,
        n,
        str(opt.out),
        prompt=gold.prompt,
        epochs=opt.epochs,
        batch_size=opt.batch_size,
        seed=opt.seed,
        max_steps=opt.full_max_steps,
        say=say,
    )
    a, p, n = texts_of(store, gold, te)
    m = triplet_margins(str(opt.out), a, p, n, prompt=gold.prompt)
    info["held_out_texts_encoded"] = len(a) + len(p) + len(n)
    info["train_triplets"] = [int(x) for x in gold.triplet_id[tr] if x >= 0]
    info["cpu_seconds"] = _cpu() - t
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps({"info": info, "margins": m.tolist()}))
    return info, m, float(info["cpu_seconds"])


def _store(
    store: Store,
    gold: GoldSet,
    base_model: str,
    final: BilinearAdapter,
    metrics: dict,
    full_info: dict | None,
    opt: TrainOptions,
) -> int:
    params = {
        **final.hyper_parameters(),
        "derived": opt.derived,
        "test_fraction": opt.test_fraction,
        "kfold": opt.kfold,
        "kfold_below": opt.kfold_below,
        "early_stopping": f"3 inner anchor folds choose among {list(opt.step_grid) or 'every step'}",
        "bootstrap": opt.bootstrap,
        **opt.extra,
    }
    with store.transaction() as s:
        row = TrainedModel(
            criterion_id=gold.criterion_id,
            criterion_version=gold.criterion_version,
            calibration_run_id=gold.run_id,
            kind="adapter",
            base_model=base_model,
            prompt=gold.prompt,
            params=params,
            metrics=metrics,
            n_train=len(gold),
            train_triplets=[int(t) for t in gold.triplet_id if t >= 0],
            weights=final.to_bytes(),
        )
        s.add(row)
        if full_info is not None:
            s.add(
                TrainedModel(
                    criterion_id=gold.criterion_id,
                    criterion_version=gold.criterion_version,
                    calibration_run_id=gold.run_id,
                    kind="full",
                    base_model=base_model,
                    prompt=gold.prompt,
                    params={"epochs": opt.epochs, "batch_size": opt.batch_size, **full_info},
                    metrics=metrics,
                    n_train=int(full_info.get("n_train", 0)),
                    train_triplets=full_info.get("train_triplets"),
                    path=str(opt.out),
                )
            )
        s.flush()
        assert row.id is not None
        return int(row.id)


def latest_adapter(store: Store, criterion_id: int) -> TrainedModel | None:
    from sqlalchemy import select
    from sqlmodel import col

    with store.session() as s:
        return s.scalars(
            select(TrainedModel)
            .where(col(TrainedModel.criterion_id) == criterion_id, col(TrainedModel.kind) == "adapter")
            .order_by(col(TrainedModel.id).desc())
        ).first()
