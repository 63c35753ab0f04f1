"""``condsim-annot export``: one entry point over the formats in this package."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from condsim_annot.errors import CondsimError

FORMATS = ("st", "jsonl", "parquet", "hf", "pairs")


def export(store, criterion: str, fmt: str, out: str | Path, *, min_confidence: float = 0.9, include_derived: bool = False,
           run_id: Optional[int] = None, command: Optional[str] = None) -> dict:
    """Write the latest calibration run of ``criterion`` in format ``fmt`` to ``out``; returns a summary dict."""
    from condsim_annot.calibrate.pipeline import load_run

    from .common import ensure_rows, gold_rows, pair_rows, write_manifest

    if fmt not in FORMATS:
        raise CondsimError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not 0.0 <= min_confidence <= 1.0:
        raise CondsimError(f"--min-confidence must be in [0, 1], not {min_confidence}")
    view = load_run(store, criterion, run_id=run_id)
    if fmt == "pairs":
        rows = pair_rows(view)
        if not rows:
            raise CondsimError(f"the calibration run of {criterion!r} has no pair scores")
    else:
        rows = gold_rows(store, view, min_confidence=min_confidence, include_derived=include_derived)
        ensure_rows(rows, "gold triplets", min_confidence)
    mod = importlib.import_module(f"condsim_annot.exporters.{fmt}")
    path = Path(mod.write(rows, out, name=view.criterion.name))
    info = {
        "criterion": view.criterion.name, "criterion_version": view.criterion.version, "format": fmt,
        "path": str(path), "rows": len(rows), "calibration_run": view.run.id, "min_confidence": min_confidence,
        "include_derived": include_derived, "derived": sum(r.get("status") == "derived" for r in rows),
        "command": command,
    }
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or fmt in ("st", "hf"):
        write_manifest(folder, info)
    return info
