"""``train()``: gold triplets -> a criterion adapter (and optionally a fine-tuned model), measured held-out.

1. Gold: the latest calibration run's gold triplets (:func:`.data.load_gold`), each weighted by
   its label probability; never the votes.
2. Plan: with enough gold one anchor-grouped train/test split; with scarce gold (fewer than
   ``kfold_below``) k-fold by anchor, so every triplet is tested once by a model that never saw
   its anchor.  Inside each training part, 3 inner anchor-grouped folds choose the number of
   steps (the minimum of their mean held-out loss curve): early stopping that no test triplet sees.
3. Evaluate on the held-out triplets, side by side: the base embedding (q . d), BM25, the
   adapter, the fine-tuned model (``full``; trained on the first split) and LM judges where
   they voted; each on all held-out gold (biased: the proposer picked them) and on the audit
   slice (unbiased).  CPU time (process time) and encoder calls are measured.
4. Store: the adapter refitted on all gold for the median early-stopping step, with its
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
from .evaluate import ALL_LABEL, AUDIT_LABEL, accuracy_report, kfold_by_anchor, split_by_anchor
from .tables import TrainedModel

Say = Callable[[str], Any]


@dataclass
class TrainOptions:
    model: str | None = None
    cache_dir: str | None = None
    rank: int = 16
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
    write: bool = True
    extra: dict = field(default_factory=dict)

    def adapter(self, **kw: Any) -> BilinearAdapter:
        return BilinearAdapter(
            rank=self.rank,
            temperature=self.temperature,
            l2=self.l2,
            lr=self.lr,
            max_steps=kw.get("max_steps", self.max_steps),
            patience=kw.get("patience", self.patience),
            seed=self.seed,
        )


def choose_steps(opt: TrainOptions, anchors: np.ndarray, arr: TripletArrays, *, folds: int = 3, seed: int = 0) -> int:
    """Early stopping without a lucky slice: the held-out *accuracy* curve averaged over ``folds`` anchor-grouped
    inner folds of the training part (smoothed over 9 steps); its first maximum is the number of steps.  (The
    held-out loss turns up long before the ranking stops improving: a few confidently wrong triplets dominate it.)"""
    inner = kfold_by_anchor(anchors, folds, seed=seed)
    curves = []
    for tr, va in inner:
        ad = opt.adapter(patience=opt.max_steps + 1).fit(arr.take(tr), arr.take(va))
        curves.append([acc for _step, _loss, acc in ad.history_][: opt.max_steps])
    n = min(len(c) for c in curves)
    mean = np.convolve(np.mean([c[:n] for c in curves], axis=0), np.ones(9) / 9, mode="same")
    return int(np.argmax(mean)) + 1


def _fit_fold(opt: TrainOptions, gold: GoldSet, arr: TripletArrays, train: np.ndarray, fold: int) -> BilinearAdapter:
    """Fit on ``train`` rows for the number of steps the inner folds chose."""
    sub = arr.take(train)
    steps = (
        choose_steps(opt, gold.anchor[train], sub, seed=opt.seed + 1000 + fold)
        if len(np.unique(gold.anchor[train])) >= 6
        else opt.max_steps
    )
    return opt.adapter(max_steps=steps).fit(sub)


def plan_splits(gold: GoldSet, opt: TrainOptions) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    if len(gold) < opt.kfold_below and not opt.full:
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
    full_info = None
    if opt.full:
        full_info, margins["fine-tuned"], cpu["fine-tuned"] = _full(store, gold, splits[0], opt, say)
    results = _evaluate(store, gold, held, margins, opt, splits)
    final = opt.adapter(max_steps=int(np.median(steps))).fit(arr)
    metrics = {
        "plan": plan,
        "n_gold": len(gold),
        "n_held_out": int(len(held)),
        "n_audit_held_out": int(gold.audit[held].sum()),
        "labels": {"all": ALL_LABEL, "audit": AUDIT_LABEL},
        "methods": results,
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "encoder_texts_encoded": emb.texts_encoded,
        "encoder_calls": emb.encoder.calls,
        "early_stopping_steps": steps,
        "final_steps": final.best_step_,
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
    store: Store, gold: GoldSet, held: np.ndarray, margins: dict[str, np.ndarray], opt: TrainOptions, splits: list
) -> list[dict]:
    anchors, audit = gold.anchor[held], gold.audit[held]
    out = []
    for name, m in margins.items():
        mask = None
        if name == "fine-tuned" and len(splits) > 1:  # trained on the first split only
            mask = np.isin(held, splits[0][1])
        out.append({"method": name, **accuracy_report(m, anchors, audit, B=opt.bootstrap, seed=opt.seed, mask=mask)})
    for judge, (m, answered) in sorted(judge_margins(store, gold, held).items()):
        out.append(
            {
                "method": f"judge:{judge}",
                "note": "its votes helped make the gold labels (optimistic)",
                **accuracy_report(m, anchors, audit, B=opt.bootstrap, seed=opt.seed, mask=answered),
            }
        )
    return out


def _full(
    store: Store, gold: GoldSet, split: tuple[np.ndarray, np.ndarray], opt: TrainOptions, say: Say
) -> tuple[dict, np.ndarray, float]:
    from .finetune import fine_tune, texts_of, triplet_margins

    if not opt.out:
        raise CondsimError("--full needs --out FOLDER for the fine-tuned model")
    tr, te = split
    t = _cpu()
    a, p, n = texts_of(store, gold, tr)
    info = fine_tune(
        opt.model,
        a,
        p,
        n,
        opt.out,
        prompt=gold.prompt,
        epochs=opt.epochs,
        batch_size=opt.batch_size,
        seed=opt.seed,
        max_steps=opt.full_max_steps,
        say=say,
    )
    a, p, n = texts_of(store, gold, te)
    m = triplet_margins(opt.out, a, p, n, prompt=gold.prompt)
    info["held_out_texts_encoded"] = len(a) + len(p) + len(n)
    info["train_triplets"] = [int(x) for x in gold.triplet_id[tr] if x >= 0]
    return info, m, _cpu() - t


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
        "early_stopping": "3 inner anchor folds",
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
        return int(row.id)


def latest_adapter(store: Store, criterion_id: int) -> TrainedModel | None:
    from sqlalchemy import select

    with store.session() as s:
        return s.scalars(
            select(TrainedModel)
            .where(TrainedModel.criterion_id == criterion_id, TrainedModel.kind == "adapter")
            .order_by(TrainedModel.id.desc())
        ).first()
