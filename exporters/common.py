"""Rows shared by every export format: one gold triplet -> anchor, positive, negative + provenance."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from condsim_annot.errors import CondsimError
from condsim_annot.propose.tables import TripletMargin

TRIPLET_COLUMNS = ["anchor", "positive", "negative", "criterion", "criterion_version", "confidence", "n_votes",
                   "annotators",
                   "status", "method", "strategy", "proposal_run", "method_margins", "anchor_id", "positive_id",
                   "negative_id", "triplet_id", "calibration_run"]
# what ``Dataset.save_to_disk`` and the manifest write into an export folder
_OURS = re.compile(r"(dataset_info\.json|state\.json|dataset_dict\.json|export\.json|data-\d{5}-of-\d{5}\.arrow)")


def method_margins(store, triplet_ids: list[int]) -> dict[int, dict[str, float]]:
    """{triplet id: {method: margin first-minus-second}} from the proposers' table (every store has it: the
    store upgrades to all migration heads when it opens)."""
    out: dict[int, dict[str, float]] = {}
    ids = [t for t in triplet_ids if t is not None]
    with store.session() as s:
        for i in range(0, len(ids), 900):
            q = (select(TripletMargin.triplet_id, TripletMargin.method, TripletMargin.margin)
                 .where(TripletMargin.triplet_id.in_(ids[i:i + 900])).order_by(TripletMargin.id))
            for tid, m, mg in s.execute(q).all():
                out.setdefault(tid, {})[m] = float(mg)  # latest run wins
    return out


def gold_rows(store, view, *, min_confidence: float = 0.9, include_derived: bool = False) -> list[dict[str, Any]]:
    """The exportable triplets of a calibration run: gold (and, on request, derived) with
    P(label) >= min_confidence, oriented as (anchor, positive, negative)."""
    from condsim_annot.calibrate.pipeline import derived_triplets

    picked = [g for g in view.gold if g["label"] in ("first", "second") and g["probability"] >= min_confidence
              and (g["status"] == "gold" or (include_derived and g["status"] == "derived"))]
    if include_derived:
        picked += derived_triplets(view, min_confidence=min_confidence)
    margins = method_margins(store, [g["triplet_id"] for g in picked])
    rows = []
    missing = [i for g in picked for i in (g["anchor_id"], g["first_id"], g["second_id"]) if i not in view.docs]
    if missing:
        from condsim_annot.store_api import documents_by_id

        with store.session() as s:
            view.docs.update(documents_by_id(s, missing))
    for g in picked:
        pos, neg = (g["first_id"], g["second_id"]) if g["label"] == "first" else (g["second_id"], g["first_id"])
        sign = 1.0 if g["label"] == "first" else -1.0
        mm = {k: sign * v for k, v in sorted(margins.get(g["triplet_id"], {}).items())}
        d = view.docs
        rows.append({
            "anchor": d[g["anchor_id"]].text, "positive": d[pos].text, "negative": d[neg].text,
            "criterion": view.criterion.name, "criterion_version": view.criterion.version,
            "confidence": float(g["probability"]), "n_votes": int(g["n_votes"]), "annotators": list(g["annotators"]),
            "status": g["status"], "method": g["method"], "strategy": g["strategy"], "proposal_run": g["proposal_run"],
            "method_margins": json.dumps(mm, sort_keys=True),
            "anchor_id": d[g["anchor_id"]].ext_id, "positive_id": d[pos].ext_id, "negative_id": d[neg].ext_id,
            "triplet_id": g["triplet_id"], "calibration_run": view.run.id,
        })
    return rows


def pair_rows(view, *, z: float = 1.96) -> list[dict[str, Any]]:
    d = view.docs
    return [{
        "criterion": view.criterion.name, "anchor_id": d[p["anchor_id"]].ext_id,
        "candidate_id": d[p["candidate_id"]].ext_id,
        "anchor": d[p["anchor_id"]].text, "candidate": d[p["candidate_id"]].text,
        "score": p["score"], "stderr": p["stderr"],
        "ci_low": p["score"] - z * p["stderr"], "ci_high": p["score"] + z * p["stderr"],
        "component": p["component"], "n_votes": p["n_votes"], "calibration_run": view.run.id,
    } for p in view.pairs]


def out_file(out: str | Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """OUT is a file when it ends with one of ``suffixes``, else a folder to write ``default_name`` into."""
    p = Path(out)
    if p.suffix in suffixes:
        if not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        return p
    if p.exists() and not p.is_dir():
        raise CondsimError(f"{p} exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p / default_name


def _beside(path: Path, tag: str) -> Path:
    """A fresh name next to ``path`` (same filesystem, so a rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}")


@contextmanager
def staged_file(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    An existing ``path`` is refused unless ``overwrite`` (we never replace what we were not asked to)."""
    if path.is_dir():
        raise CondsimError(f"{path} is a folder; give a file name or another folder")
    if path.exists() and not overwrite:
        raise CondsimError(f"{path} already exists; pass --overwrite to replace it")
    tmp = _beside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` an export did not write (a saved dataset plus ``export.json``)."""
    return sorted(p.name for p in folder.iterdir() if not (p.is_file() and _OURS.fullmatch(p.name)))


@contextmanager
def staged_folder(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty folder beside ``out``; on success it takes ``out``'s place (write beside, rename).

    A non-empty ``out`` is refused unless ``overwrite``, and even then only when everything in it
    was written by an earlier export: an export never deletes files it did not write."""
    if out.exists() and not out.is_dir():
        raise CondsimError(f"{out} exists and is not a folder")
    busy = out.is_dir() and any(out.iterdir())
    if busy and not overwrite:
        raise CondsimError(f"{out} is not empty; choose a new or empty folder, or pass --overwrite to replace "
                           "an earlier export there")
    if busy:
        foreign = foreign_entries(out)
        if foreign:
            more = ", ..." if len(foreign) > 3 else ""
            raise CondsimError(f"{out} holds files an export did not write ({', '.join(foreign[:3])}{more}); "
                               "exports never delete them: choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(out, "tmp")
    tmp.mkdir()  # honours the umask, unlike mkdtemp's 0700
    old: Path | None = None
    try:
        yield tmp
        if busy:
            old = _beside(out, "old")
            out.rename(old)
        tmp.rename(out)  # onto a missing or empty folder: one atomic rename
    finally:
        for p in (tmp, old):
            if p is not None and p.exists():
                shutil.rmtree(p)


def ensure_rows(rows: list, what: str, min_confidence: float) -> None:
    if not rows:
        raise CondsimError(f"no {what} to export at --min-confidence {min_confidence}: collect more votes, "
                           "lower --min-confidence, or add --include-derived")


def write_manifest(folder: Path, info: dict) -> Path:
    p = folder / "export.json"
    p.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return p


def arrow_table(rows: list[dict], columns: list[str] | None = None):
    import pyarrow as pa

    cols = columns or list(rows[0].keys())
    return pa.table({c: [r.get(c) for r in rows] for c in cols})


def human_answers(view) -> dict[int, str]:
    """Per triplet, the human answer: the majority of the human annotators' decisive votes
    (adjudications decide), where there is one.  Judges are calibrated against this, not
    against the model's gold, which their own votes helped make."""
    from collections import Counter

    votes: dict[int, list[str]] = defaultdict(list)
    review: dict[int, str] = {}
    for v in view.votes:
        if v["kind"] != "human" or v["choice"] not in ("first", "second", "tie"):
            continue
        if v["source"] == "review":
            review[v["triplet_id"]] = v["choice"]
        else:
            votes[v["triplet_id"]].append(v["choice"])
    out = {}
    for t, cs in votes.items():
        (top, n), *rest = Counter(cs).most_common()
        if not rest or rest[0][1] < n:
            out[t] = top
    out.update(review)
    return {t: c for t, c in out.items() if c in ("first", "second")}
