"""``train --full``: fine-tune the sentence-transformers model itself on the gold triplets.

sentence-transformers' ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``:
each (anchor, positive, negative) row gives the anchor its positive against the in-batch
positives plus its own hard negative (the gold triplet's other candidate).  Anchors carry the
criterion's query prompt (the trainer's ``prompts``), documents none, as in the proposer.
The result is a model folder that ``--model`` accepts and ``SentenceTransformer(path)`` loads.
Runs on a GPU when torch sees one; on CPU it is slow, and says so before starting.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlmodel import col

from ..db import Store
from ..models import Document
from ..propose.embedding import resolve_model
from .data import GoldSet


def texts_of(store: Store, gold: GoldSet, rows: np.ndarray) -> tuple[list[str], list[str], list[str]]:
    """(anchor, positive, negative) texts of ``rows``."""
    ids = {int(i) for i in np.concatenate([gold.anchor[rows], gold.pos[rows], gold.neg[rows]])}
    with store.session() as s:
        got = dict(
            s.execute(select(col(Document.id), col(Document.text)).where(col(Document.id).in_(sorted(ids)))).all()
        )
    return (
        [got[int(i)] for i in gold.anchor[rows]],
        [got[int(i)] for i in gold.pos[rows]],
        [got[int(i)] for i in gold.neg[rows]],
    )


def _device_note() -> str:
    import torch

    if torch.cuda.is_available():
        return f"on GPU ({torch.cuda.get_device_name(0)})"
    return "on CPU: this is slow (MiniLM: minutes per epoch for a few hundred triplets; larger models far more)"


def fine_tune(
    base: str | None,
    anchors: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str],
    out: str,
    *,
    prompt: str,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    seed: int = 0,
    max_steps: int | None = None,
    say: Callable[[str], Any] | None = None,
) -> dict:
    """Fine-tune ``base`` on the triplets and save it to ``out``; returns what was done."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    say = say or (lambda _m: None)
    name = resolve_model(base)
    if os.path.exists(name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    say(f"fine-tuning {name} on {len(anchors)} triplets for {epochs} epoch(s) {_device_note()}")
    model = SentenceTransformer(name, device=os.environ.get("CONDSIM_DEVICE") or None)
    data = Dataset.from_dict({"anchor": list(anchors), "positive": list(positives), "negative": list(negatives)})
    with tempfile.TemporaryDirectory(prefix="condsim-ft-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            warmup_ratio=0.1,
            seed=seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            prompts={"anchor": prompt},
            save_strategy="no",
            report_to="none",
            logging_steps=10**9,
            disable_tqdm=False,
            max_steps=max_steps if max_steps else -1,
            dataloader_num_workers=0,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model)
        )
        result = trainer.train()
    model.save(out)
    return {
        "path": str(out),
        "base_model": name,
        "epochs": epochs,
        "steps": int(result.global_step),
        "lr": lr,
        "batch_size": batch_size,
        "loss": "MultipleNegativesRankingLoss (hard negatives from the triplets)",
        "train_loss": float(result.training_loss),
        "n_train": len(anchors),
    }


def triplet_margins(
    model_path: str,
    anchors: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str],
    *,
    prompt: str,
    batch_size: int = 64,
) -> np.ndarray:
    """cos(q_a, d_p) - cos(q_a, d_n) under a (fine-tuned) model, anchors with the query prompt."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=os.environ.get("CONDSIM_DEVICE") or None)
    kw: dict[str, Any] = dict(
        batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    q = model.encode(list(anchors), prompt=prompt, **kw)
    p = model.encode(list(positives), **kw)
    n = model.encode(list(negatives), **kw)
    return np.einsum("ij,ij->i", q, p - n).astype(np.float64)
