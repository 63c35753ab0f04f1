"""sentence-transformers training data: a ``datasets`` folder with exactly the columns
``anchor, positive, negative`` (text), the format ``MultipleNegativesRankingLoss`` and
``TripletLoss`` take in ``SentenceTransformerTrainer``.  Provenance goes to
``export.json`` beside it, not into extra columns (the trainer would feed them to the loss)."""

from __future__ import annotations

from pathlib import Path

from .common import arrow_table
from .hf import save_folder


def write(rows: list[dict], out: str | Path, *, name: str, overwrite: bool = False,
          manifest: dict | None = None) -> Path:
    return save_folder(arrow_table(rows, ["anchor", "positive", "negative"]), out, overwrite=overwrite,
                       manifest=manifest)
