"""Hugging Face ``datasets`` folder (``Dataset.save_to_disk``) with every column."""

from __future__ import annotations

import shutil
from pathlib import Path

from .common import TRIPLET_COLUMNS, arrow_table


def _save(table, out: str | Path) -> Path:
    from datasets import Dataset

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "dataset_info.json").exists():
            from condsim_annot.errors import CondsimError

            raise CondsimError(f"{out} is a non-empty folder that is not a saved dataset; choose an empty or new folder")
        shutil.rmtree(out)
    ds = Dataset(table)
    ds.save_to_disk(str(out))
    return out


def write(rows: list[dict], out: str | Path, *, name: str) -> Path:
    return _save(arrow_table(rows, TRIPLET_COLUMNS), out)
