"""``condsim-annot votes import FILE.csv``: votes made elsewhere, as source ``import``.

Columns (header row, any order): ``criterion, anchor, a, b, annotator, choice`` and
optionally ``kind`` (human | llm), ``latency_ms``, ``confidence``, ``rationale``,
``group_id``.  ``anchor``/``a``/``b`` are document ids from the ingested files
(``ext_id``); ``choice`` is ``a | b | tie | cant_tell | skip`` in the order the
annotator saw them (``a`` shown first).  Importing the same file twice adds nothing
(each row has a content hash); when one annotator votes twice on a triplet in the
file, the last line counts and the earlier ones are kept as ``superseded`` (and counted).

All or nothing, without starving other writers:

1. *validate* the whole file (reads only): the first bad row raises ``file:line: field``;
2. *stage* the rows in a temporary table of this connection (SQLite keeps temporary
   tables in a separate file, so this takes no lock on the store);
3. *publish* with a few set-based statements in one short transaction (annotators,
   triplets, superseded votes, new votes).  Until it commits nobody sees anything;
   an annotator in the TUI waits at most for this step, never for the file.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from ..db import Store, StoreError
from ..errors import InputError, check_string
from ..ingest import decoded_lines, next_csv_record
from ..models import Annotator, Criterion, Document, Vote
from ..store_api import canonical, max_length, to_canonical_choice
from .votes_publish import publish

REQUIRED = ("criterion", "anchor", "a", "b", "annotator", "choice")
OPTIONAL = ("kind", "latency_ms", "confidence", "rationale", "group_id")
CHOICE_MAP = {"a": "first", "b": "second", "tie": "tie", "cant_tell": "cant_tell", "skip": "skip",
              "cant-tell": "cant_tell", "canttell": "cant_tell"}
CHUNK = 5000  # rows validated and staged at a time
SQLITE_CACHE_KIB = 65536  # page cache of the importing connection (SQLite's default is 2 MiB)
Progress = Callable[[str, int, int | None], None]  # (phase, done, total)

STAGING = Table(
    "vote_import_staging", MetaData(),
    Column("line", Integer, nullable=False),
    Column("criterion_id", Integer, nullable=False),
    Column("anchor_id", Integer, nullable=False),
    Column("first_id", Integer, nullable=False),
    Column("second_id", Integer, nullable=False),
    Column("annotator", String(300), nullable=False),
    Column("choice", String(10), nullable=False),
    Column("swapped", Boolean, nullable=False),
    Column("latency_ms", Float),
    Column("confidence", Float),
    Column("rationale", Text),
    Column("group_id", String(64)),
    Column("external_id", String(200), nullable=False),
    prefixes=["TEMPORARY"],
)
STAGED = [c.name for c in STAGING.columns]  # the columns _Validator fills, in order


@dataclass
class ImportResult:
    read: int = 0
    added: int = 0
    unchanged: int = 0
    triplets_created: int = 0
    revoted_in_file: int = 0
    annotators: set = field(default_factory=set)
    criteria: set = field(default_factory=set)
    kinds: dict = field(default_factory=dict, repr=False)  # annotator -> kind, for the publish step

    @property
    def warnings(self) -> list[str]:
        if not self.revoted_in_file:
            return []
        return [f"{self.revoted_in_file} row(s) are an annotator voting again on a triplet voted earlier in this "
                "file: the last line counts, the earlier ones are kept as superseded"]

    def as_dict(self) -> dict:
        return {"read": self.read, "added": self.added, "unchanged": self.unchanged,
                "triplets_created": self.triplets_created, "revoted_in_file": self.revoted_in_file,
                "annotators": sorted(self.annotators), "criteria": sorted(self.criteria), "warnings": self.warnings}


def _number(v: str, *, file: str, line: int, fld: str) -> float | None:
    if not v:
        return None
    try:
        x = float(v)
    except ValueError:
        raise InputError(f"not a number: {v!r}", file=file, line=line, field=fld) from None
    if not math.isfinite(x):
        raise InputError(f"not a finite number: {v!r}", file=file, line=line, field=fld)
    return x


def _csv_rows(lines: Iterator[bytes], name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: stripped value}) for each non-blank row; header and shape checked."""
    current = [0]

    def text_lines() -> Iterator[str]:
        for n, line in decoded_lines(lines, name):
            current[0] = n
            yield line[1:] if n == 1 and line.startswith("\ufeff") else line

    reader = csv.reader(text_lines(), strict=True)
    header = next_csv_record(reader, name, current, 1)
    if not header or not any(h.strip() for h in header):
        raise InputError("empty file: expected a header row with " + ", ".join(REQUIRED), file=name, line=1)
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}",
                         file=name, line=1)
    while True:
        start = current[0] + 1
        values = next_csv_record(reader, name, current, start)
        if values is None:
            return
        if len(values) > len(header):
            raise InputError(f"{len(values)} cells but {len(header)} columns", file=name, line=start)
        row = {h: v.strip() for h, v in zip(header, values, strict=False)}
        if any(row.values()):
            yield start, row


class _Validator:
    """Turns CSV rows into staging rows; looks criteria, documents and annotators up in bulk."""

    def __init__(self, conn: Connection, name: str, file_label: str):
        self.conn, self.name, self.file_label = conn, name, file_label
        self.criteria: dict[str, tuple[int, int | None]] = {}
        self.docs: dict[tuple[int | None, str], Any] = {}  # -> id, or an error message
        self.kinds: dict[str, str] = {}  # annotator -> kind (existing or first seen in the file)
        self.known: dict[str, str] = {}  # annotators already in the store -> kind
        self.name_max = max_length(col(Annotator.name)) or 300
        self.group_max = max_length(col(Vote.group_id)) or 64

    def _criterion(self, name: str, line: int) -> tuple[int, int | None]:
        if name not in self.criteria:
            q = select(col(Criterion.id), col(Criterion.corpus_id)).where(col(Criterion.name) == name)
            row = self.conn.execute(q).first()
            if row is None:
                raise InputError(f"no criterion named {name!r} (add it with `condsim-annot criteria add`)",
                                 file=self.name, line=line, field="criterion")
            self.criteria[name] = (cast(int, row[0]), row[1])
        return self.criteria[name]

    def _resolve_docs(self, keys: set[tuple[int | None, str]]) -> None:
        """Look up every (corpus, ext_id) not yet known, 900 at a time."""
        by_corpus: dict[int | None, list[str]] = {}
        for corpus_id, ext in keys - self.docs.keys():
            by_corpus.setdefault(corpus_id, []).append(ext)
        for corpus_id, exts in by_corpus.items():
            found: dict[str, list[int]] = {}
            for i in range(0, len(exts), 900):
                q = select(col(Document.ext_id), col(Document.id)).where(col(Document.ext_id).in_(exts[i:i + 900]))
                if corpus_id is not None:
                    q = q.where(col(Document.corpus_id) == corpus_id)
                for ext, doc_id in self.conn.execute(q):
                    found.setdefault(ext, []).append(cast(int, doc_id))
            for ext in exts:
                ids = found.get(ext, [])
                if len(ids) == 1:
                    self.docs[(corpus_id, ext)] = ids[0]
                elif not ids:
                    where = " in the criterion's corpus" if corpus_id is not None else ""
                    self.docs[(corpus_id, ext)] = f"no document with id {ext!r}{where}"
                else:
                    self.docs[(corpus_id, ext)] = (f"document id {ext!r} exists in {len(ids)} corpora; "
                                                   "give the criterion a corpus")

    def _doc(self, corpus_id: int | None, ext: str, line: int, fld: str) -> int:
        found = self.docs[(corpus_id, ext)]
        if isinstance(found, str):
            raise InputError(found, file=self.name, line=line, field=fld)
        return int(found)

    def _annotator(self, name: str, kind: str, line: int) -> None:
        if self.kinds.get(name) == kind:  # seen before: already checked
            return
        check_string(name, self.name, line, "annotator")
        if len(name) > self.name_max:
            raise InputError(f"{len(name)} characters; at most {self.name_max} are allowed", file=self.name,
                             line=line, field="annotator")
        if name not in self.kinds:
            self.kinds[name] = self.known.get(name) or kind
        if self.kinds[name] != kind:
            raise InputError(f"annotator {name!r} is {self.kinds[name]!r} (in the store or earlier in this file), "
                             f"not {kind!r}", file=self.name, line=line, field="kind")

    def chunk(self, rows: list[tuple[int, dict[str, str]]]) -> list[tuple[Any, ...]]:
        """Validate a chunk of rows (in line order) into staging rows (in :data:`STAGED` order)."""
        keys: set[tuple[int | None, str]] = set()
        new_names = list({vals.get("annotator", "") for _, vals in rows} - self.kinds.keys())
        for i in range(0, len(new_names), 900):
            q = select(col(Annotator.name), col(Annotator.kind)).where(col(Annotator.name).in_(new_names[i:i + 900]))
            self.known.update({n: k for n, k in self.conn.execute(q)})
        for line, vals in rows:
            for c in REQUIRED:
                if not vals.get(c):
                    raise InputError("empty value", file=self.name, line=line, field=c)
                check_string(vals[c], self.name, line, c)  # a NUL would reach PostgreSQL as a query parameter
            corpus_id = self._criterion(vals["criterion"], line)[1]
            keys.update((corpus_id, vals[f]) for f in ("anchor", "a", "b"))
        self._resolve_docs(keys)
        return [self._row(line, vals) for line, vals in rows]

    def _row(self, line: int, vals: dict[str, str]) -> tuple[Any, ...]:
        f = self.name
        crit_id, corpus_id = self._criterion(vals["criterion"], line)
        choice_raw = vals["choice"].lower()
        if choice_raw not in CHOICE_MAP:
            raise InputError(f"unknown choice {vals['choice']!r}; expected a, b, tie, cant_tell or skip",
                             file=f, line=line, field="choice")
        kind = (vals.get("kind") or "human").lower()
        if kind not in ("human", "llm"):
            raise InputError(f"unknown kind {vals.get('kind')!r}; expected human or llm", file=f, line=line,
                             field="kind")
        anchor = self._doc(corpus_id, vals["anchor"], line, "anchor")
        a = self._doc(corpus_id, vals["a"], line, "a")
        b = self._doc(corpus_id, vals["b"], line, "b")
        if a == b:
            raise InputError("the two candidates are the same document", file=f, line=line, field="b")
        if anchor in (a, b):
            raise InputError("the anchor is also a candidate", file=f, line=line, field="a" if anchor == a else "b")
        latency = _number(vals.get("latency_ms", ""), file=f, line=line, fld="latency_ms")
        conf = _number(vals.get("confidence", ""), file=f, line=line, fld="confidence")
        if conf is not None and not 0.0 <= conf <= 1.0:
            raise InputError(f"confidence {conf} is not in [0, 1]", file=f, line=line, field="confidence")
        self._annotator(vals["annotator"], kind, line)
        group = vals.get("group_id") or None
        if group is not None and len(group) > self.group_max:
            raise InputError(f"{len(group)} characters; at most {self.group_max} are allowed", file=f, line=line,
                             field="group_id")
        rationale = vals.get("rationale") or None
        for fld, v in (("rationale", rationale), ("group_id", group)):
            if v is not None:
                check_string(v, f, line, fld)
        _, first, second, swapped = canonical(anchor, a, b)
        digest = hashlib.sha1("\x1f".join([vals["criterion"], vals["anchor"], vals["a"], vals["b"], vals["annotator"],
                                           choice_raw, vals.get("group_id", "")]).encode()).hexdigest()
        return (line, crit_id, anchor, first, second, vals["annotator"],
                to_canonical_choice(CHOICE_MAP[choice_raw], swapped), swapped, latency, conf, rationale, group,
                f"import:{digest[:32]}")


def _open_lines(path: str, text: str | None) -> tuple[Iterator[bytes], int | None, Callable[[], int]]:
    """Byte lines of the file (or of ``text``), its size and a bytes-read counter for progress."""
    if text is not None:
        data = text.encode("utf-8", "surrogatepass")
        return iter(data.splitlines(keepends=True)), len(data), lambda: 0
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder, not a file", file=path)
    if not p.exists():
        raise InputError("no such file", file=path)
    fh = open(p, "rb")
    pos = [0]

    def lines() -> Iterator[bytes]:
        with fh:
            for line in fh:
                pos[0] += len(line)
                yield line

    return lines(), p.stat().st_size, lambda: pos[0]


def _write_staged(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Bulk-write staged rows through the driver (SQLite ``executemany``, PostgreSQL ``COPY``)."""
    raw: Any = conn.connection.driver_connection
    cols = ", ".join(STAGED)
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY vote_import_staging ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
    elif conn.dialect.name == "sqlite":
        raw.executemany(f"INSERT INTO vote_import_staging ({cols}) VALUES ({', '.join('?' * len(STAGED))})", rows)
    else:
        conn.execute(STAGING.insert(), [dict(zip(STAGED, r, strict=True)) for r in rows])


def _stage(conn: Connection, path: str, text: str | None, res: ImportResult, progress: Progress | None) -> None:
    """Validate every row and stage it (temporary table: no lock on the store); raises on the first bad row."""
    lines, total, pos = _open_lines(path, text)
    v = _Validator(conn, path, Path(path).name)
    buf: list[tuple[int, dict[str, str]]] = []

    def flush() -> None:
        staged = v.chunk(buf)
        _write_staged(conn, staged)
        conn.commit()  # the temporary table only: no lock on the store
        res.read += len(staged)
        buf.clear()
        if progress:
            progress("validate", pos(), total)

    for item in _csv_rows(lines, path):
        buf.append(item)
        if len(buf) >= CHUNK:
            flush()
    if buf:
        flush()
    res.criteria = set(v.criteria)
    res.annotators = set(v.kinds)
    res.kinds = dict(v.kinds)
    if progress:
        progress("validate", total or 0, total)


def import_votes(store: Store, path: str | Path, *, text: str | None = None,
                 progress: Progress | None = None) -> ImportResult:
    """Import a votes CSV, all or nothing.  ``text`` overrides reading ``path``.

    ``progress(phase, done, total)``: phase ``validate`` (bytes of the file) then
    ``publish`` (statements of the final transaction).
    """
    path = str(path)
    res = ImportResult()
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":  # the publish step walks the vote indexes: keep them in memory
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            conn.exec_driver_sql(f"PRAGMA temp.cache_size = -{SQLITE_CACHE_KIB}")
        STAGING.create(conn)
        conn.commit()
        try:
            _stage(conn, path, text, res, progress)
            if not res.read:
                raise InputError("no votes: the file has a header but no rows", file=path, line=2)
            publish(conn, res, Path(path).name, progress)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreError(f"{path}: nothing was imported: the store refused the write ({reason}); "
                             "try again") from None
        finally:
            conn.rollback()
            STAGING.drop(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS vote_import_rows")
            conn.exec_driver_sql("DROP TABLE IF EXISTS vote_import_triplets")
            conn.commit()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
                conn.exec_driver_sql("PRAGMA cache_size = -2000")  # the pooled connection goes back as it came
    return res

