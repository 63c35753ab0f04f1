"""``condsim-annot export``: one entry point over the formats in this package."""

from __future__ import annotations

import importlib
from pathlib import Path

from condsim_annot.errors import CondsimError

FORMATS = ("st", "jsonl", "parquet", "hf", "pairs")


def export(store, criterion: str, fmt: str, out: str | Path, *, min_confidence: float = 0.9,
           include_derived: bool = False,
           run_id: int | None = None, command: str | None = None, overwrite: bool = False) -> dict:
    """Write the latest calibration run of ``criterion`` in format ``fmt`` to ``out``; returns a summary dict.

    Never deletes what it did not write: an existing file or non-empty folder is refused unless
    ``overwrite``, and then replaced in one rename (a folder only when it holds an earlier export)."""
    from condsim_annot.calibrate.pipeline import load_run

    from .common import ensure_rows, gold_rows, pair_rows

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
    info = {
        "criterion": view.criterion.name, "criterion_version": view.criterion.version, "format": fmt,
        "rows": len(rows), "calibration_run": view.run.id, "min_confidence": min_confidence,
        "include_derived": include_derived, "derived": sum(r.get("status") == "derived" for r in rows),
        "command": command,
    }
    # folder formats write the manifest (export.json) inside the staged folder, before the rename
    path = Path(mod.write(rows, out, name=view.criterion.name, overwrite=overwrite,
                          manifest=info if fmt in ("st", "hf") else None))
    return {**info, "path": str(path)}


def export_all(store, criterion: str, folder: str | Path, *, min_confidence: float = 0.9, include_derived: bool = False,
               report: bool = True, command: str | None = None, overwrite: bool = False) -> dict:
    """Every export format and the report of ``criterion`` into ``folder`` (for the demo and scripts).

    Layout: ``st/`` and ``hf/`` (datasets folders), ``<criterion>.jsonl``, ``<criterion>.parquet``,
    ``<criterion>.pairs.jsonl``, ``report.html``/``report.json``/``report.md``.  Returns
    ``{format: summary}`` plus ``"report": [paths]``; a format with no rows is reported as
    ``{"rows": 0, "error": ...}`` instead of failing the others."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    targets = {"st": folder / "st", "hf": folder / "hf", "jsonl": folder, "parquet": folder, "pairs": folder}
    for fmt, target in targets.items():
        try:
            out[fmt] = export(store, criterion, fmt, target, min_confidence=min_confidence,
                              include_derived=include_derived,
                              command=command, overwrite=overwrite)
        except CondsimError as exc:
            out[fmt] = {"rows": 0, "error": str(exc)}
    if report:
        from .report import write_report

        out["report"] = write_report(store, criterion, html=str(folder / "report.html"),
                                     json_path=str(folder / "report.json"),
                                     md=str(folder / "report.md"), command=command)
    return out
