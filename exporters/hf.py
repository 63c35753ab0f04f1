"""Hugging Face ``datasets`` folder (``Dataset.save_to_disk``) with every column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import TRIPLET_COLUMNS, arrow_table, staged_folder, write_manifest


def save_folder(table: Any, out: str | Path, *, overwrite: bool = False, manifest: dict | None = None) -> Path:
    """Save ``table`` as a datasets folder at ``out``: written beside it, then renamed into place.

    A non-empty ``out`` is refused unless ``overwrite`` and an earlier export (see ``staged_folder``)."""
    from datasets import Dataset

    out = Path(out)
    with staged_folder(out, overwrite=overwrite) as tmp:
        Dataset(table).save_to_disk(str(tmp))
        if manifest is not None:
            write_manifest(tmp, {**manifest, "path": str(out)})
    return out


def write(rows: list[dict], out: str | Path, *, name: str, overwrite: bool = False,
          manifest: dict | None = None) -> Path:
    return save_folder(arrow_table(rows, TRIPLET_COLUMNS), out, overwrite=overwrite, manifest=manifest)
