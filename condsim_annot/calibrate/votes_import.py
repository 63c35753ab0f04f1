"""``condsim-annot votes import FILE.csv``: votes made elsewhere, as source ``import``.

Columns (header row, any order): ``criterion, anchor, a, b, annotator, choice`` and
optionally ``kind`` (human | llm), ``latency_ms``, ``confidence``, ``rationale``,
``group_id``.  ``anchor``/``a``/``b`` are document ids from the ingested files
(``ext_id``); ``choice`` is ``a | b | tie | cant_tell | skip`` in the order the
annotator saw them (``a`` shown first).  The whole file is one transaction: the
first bad row writes nothing and the error names ``file:line: field``.
Importing the same file twice adds nothing (each row has a content hash).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sqlalchemy import select

from ..db import Store
from ..errors import InputError
from ..models import Criterion, Document, Vote
from ..store_api import add_triplet, canonical, get_or_create_annotator, record_vote, to_canonical_choice

REQUIRED = ("criterion", "anchor", "a", "b", "annotator", "choice")
OPTIONAL = ("kind", "latency_ms", "confidence", "rationale", "group_id")
CHOICE_MAP = {"a": "first", "b": "second", "tie": "tie", "cant_tell": "cant_tell", "skip": "skip",
              "cant-tell": "cant_tell", "canttell": "cant_tell"}


@dataclass
class ImportResult:
    read: int = 0
    added: int = 0
    unchanged: int = 0
    triplets_created: int = 0
    annotators: set = field(default_factory=set)
    criteria: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"read": self.read, "added": self.added, "unchanged": self.unchanged,
                "triplets_created": self.triplets_created, "annotators": sorted(self.annotators),
                "criteria": sorted(self.criteria)}


def _float(v: str, *, file, line, fld) -> Optional[float]:
    if v is None or str(v).strip() == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise InputError(f"not a number: {v!r}", file=file, line=line, field=fld) from None


def import_votes(store: Store, path: str | Path, *, text: Optional[str] = None) -> ImportResult:
    """Import a votes CSV (all or nothing).  ``text`` overrides reading ``path``."""
    path = str(path)
    if text is None:
        p = Path(path)
        if not p.exists():
            raise InputError("no such file", file=path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError("empty file: expected a header row with " + ", ".join(REQUIRED), file=path, line=1)
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}", file=path, line=1)
    res = ImportResult()
    with store.transaction() as s:
        crit_cache: dict[str, Criterion] = {}
        doc_cache: dict[tuple[Optional[int], str], int] = {}

        def criterion(name: str, line: int) -> Criterion:
            if name not in crit_cache:
                c = s.scalars(select(Criterion).where(Criterion.name == name)).first()
                if c is None:
                    raise InputError(f"no criterion named {name!r} (add it with `condsim-annot criteria add`)",
                                     file=path, line=line, field="criterion")
                crit_cache[name] = c
            return crit_cache[name]

        def doc(corpus_id: Optional[int], ext: str, line: int, fld: str) -> int:
            key = (corpus_id, ext)
            if key not in doc_cache:
                q = select(Document.id, Document.corpus_id).where(Document.ext_id == ext)
                if corpus_id is not None:
                    q = q.where(Document.corpus_id == corpus_id)
                rows = s.execute(q).all()
                if not rows:
                    raise InputError(f"no document with id {ext!r}" + (" in the criterion's corpus" if corpus_id else ""),
                                     file=path, line=line, field=fld)
                if len(rows) > 1:
                    raise InputError(f"document id {ext!r} exists in {len(rows)} corpora; give the criterion a corpus",
                                     file=path, line=line, field=fld)
                doc_cache[key] = rows[0][0]
            return doc_cache[key]

        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns
                raise InputError(f"{len(header) + len(row[None])} cells but {len(header)} columns", file=path, line=line)
            vals = {k: (v or "").strip() for k, v in row.items()}
            if not any(vals.values()):
                continue
            res.read += 1
            for c in REQUIRED:
                if not vals.get(c):
                    raise InputError("empty value", file=path, line=line, field=c)
            crit = criterion(vals["criterion"], line)
            choice_raw = vals["choice"].lower()
            if choice_raw not in CHOICE_MAP:
                raise InputError(f"unknown choice {vals['choice']!r}; expected a, b, tie, cant_tell or skip",
                                 file=path, line=line, field="choice")
            kind = (vals.get("kind") or "human").lower()
            if kind not in ("human", "llm"):
                raise InputError(f"unknown kind {vals.get('kind')!r}; expected human or llm", file=path, line=line, field="kind")
            anchor = doc(crit.corpus_id, vals["anchor"], line, "anchor")
            a = doc(crit.corpus_id, vals["a"], line, "a")
            b = doc(crit.corpus_id, vals["b"], line, "b")
            if a == b:
                raise InputError("the two candidates are the same document", file=path, line=line, field="b")
            if anchor in (a, b):
                raise InputError("the anchor is also a candidate", file=path, line=line, field="a" if anchor == a else "b")
            latency = _float(vals.get("latency_ms"), file=path, line=line, fld="latency_ms")
            conf = _float(vals.get("confidence"), file=path, line=line, fld="confidence")
            if conf is not None and not 0.0 <= conf <= 1.0:
                raise InputError(f"confidence {conf} is not in [0, 1]", file=path, line=line, field="confidence")
            try:
                ann = get_or_create_annotator(s, vals["annotator"], kind=kind)
            except Exception as exc:  # kind clash with an existing annotator
                raise InputError(str(exc), file=path, line=line, field="kind") from None
            _, _, _, swapped = canonical(anchor, a, b)
            t, created = add_triplet(s, crit.id, anchor, a, b, method="import")
            res.triplets_created += int(created)
            choice = to_canonical_choice(CHOICE_MAP[choice_raw], swapped)
            digest = hashlib.sha1("\x1f".join([crit.name, vals["anchor"], vals["a"], vals["b"], vals["annotator"],
                                               choice_raw, vals.get("group_id", "")]).encode()).hexdigest()
            ext = f"import:{digest[:32]}"
            dup = s.scalars(select(Vote.id).where(Vote.external_id == ext, Vote.source == "import",
                                                  Vote.triplet_id == t.id)).first()
            if dup is not None:
                res.unchanged += 1
                continue
            record_vote(s, t.id, ann.id, choice, source="import", swapped=swapped, latency_ms=latency,
                        rationale=vals.get("rationale") or None, confidence=conf, group_id=vals.get("group_id") or None,
                        external_id=ext, meta={"file": Path(path).name, "line": line})
            res.added += 1
            res.annotators.add(ann.name)
            res.criteria.add(crit.name)
    return res
