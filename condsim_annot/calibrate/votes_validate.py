"""The check of ``votes import``: CSV rows -> staging rows, or the first bad row as ``file:line: field``.

Fast because the common row never leaves one loop: criteria, documents and annotators are
looked up in bulk per chunk into plain dicts, and a row whose every value passes the cheap
tests (dict hits, no NUL, plain Unicode, known choice/kind, finite numbers) is turned into its
staging tuple inline.  Any other row goes through :meth:`Validator.slow_row`, the one
place that words errors, so every message is the same as a row-by-row check would give.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlmodel import col

from ..criteria import get_criterion
from ..errors import InputError, check_string
from ..ingest import decoded_lines, next_csv_record
from ..models import Annotator, Document, Vote
from ..store_api import canonical, max_length, to_canonical_choice

REQUIRED = ("criterion", "anchor", "a", "b", "annotator", "choice")
OPTIONAL = ("kind", "latency_ms", "confidence", "rationale", "group_id")
CHOICE_MAP = {"a": "first", "b": "second", "tie": "tie", "cant_tell": "cant_tell", "skip": "skip",
              "cant-tell": "cant_tell", "canttell": "cant_tell"}
_FLIP = {"first": "second", "second": "first"}
_BULK = 900  # names per IN (...) lookup


def external_id(criterion_id: int, anchor: int, first: int, second: int, digest: str) -> str:
    """An imported vote's id: its triplet's key (so an import appends to the index, in the order it writes),
    then the hash of its CSV line (so the same line imported again is recognised).  The hot loop of
    :meth:`Validator.chunk` builds the same string inline."""
    return f"import:{criterion_id:08x}{anchor:08x}{first:08x}{second:08x}:{digest[:32]}"


class _Hex(dict):
    """id -> its 8 hex digits, formatted once per id (an external id holds four; a file repeats its documents)."""

    def __missing__(self, key: int) -> str:
        self[key] = text = f"{key:08x}"
        return text


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


def _plain(text: str) -> bool:
    """No NUL and no lone surrogate (what :func:`check_string` refuses), tested on a whole row at once."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raising(exc: csv.Error) -> Iterator[list[str]]:
    raise exc
    yield []  # a generator: ``next`` on it raises ``exc``


def _text(blocks: Iterable[list[bytes]], name: str) -> Iterator[io.StringIO]:
    """Each block of byte lines decoded at once (a bad one is named by its line) and split as it was read."""
    before = 0  # lines in the earlier blocks
    for block in blocks:
        try:
            text = b"".join(block).decode("utf-8")
        except UnicodeDecodeError as exc:
            try:  # the first bad line, worded as ingest words it
                for _ in decoded_lines(iter(block), name):
                    pass
            except InputError as bad:
                raise InputError(bad.reason, file=name, line=before + (bad.line or 1)) from None
            raise exc  # not reached: a block that does not decode holds a line that does not
        if not before and text.startswith("\ufeff"):
            text = text[1:]
        before += len(block)
        yield io.StringIO(text, newline="\n")  # lines end at "\n" only, as the file's byte lines do


def read_csv(blocks: Iterable[list[bytes]], name: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The stripped header (checked) and an iterator of (line, stripped cells) for each non-blank row.

    ``blocks``: the file's byte lines, a list of them at a time (decoded a block at a time: no Python
    call per line; ``reader.line_num`` counts the lines)."""
    reader = csv.reader(chain.from_iterable(_text(blocks, name)), strict=True)

    def line() -> list[int]:
        return [reader.line_num]

    try:
        raw = next(reader)
    except StopIteration:
        raw = None
    except csv.Error as exc:
        next_csv_record(_raising(exc), name, line(), 1)
    if not raw or not any(h.strip() for h in raw):
        raise InputError("empty file: expected a header row with " + ", ".join(REQUIRED), file=name, line=1)
    header = [h.strip() for h in raw]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}",
                         file=name, line=1)

    def rows() -> Iterator[tuple[int, list[str]]]:
        width, start, strip = len(header), reader.line_num + 1, str.strip
        try:
            for values in reader:  # one loop, no call per record: the reader does not move while we yield
                if len(values) != width:
                    if len(values) > width:
                        raise InputError(f"{len(values)} cells but {width} columns", file=name, line=start)
                    values += [""] * (width - len(values))
                values = list(map(strip, values))
                if any(values):
                    yield start, values
                start = reader.line_num + 1
        except csv.Error as exc:
            next_csv_record(_raising(exc), name, line(), start)  # worded where every CSV reader words it

    return header, rows()


class Validator:
    """Turns CSV rows into staging rows; looks criteria, documents and annotators up in bulk."""

    def __init__(self, conn: Connection, name: str, header: list[str]):
        self.conn, self.name, self.header = conn, name, header
        self.pos = {h: i for i, h in enumerate(header)}  # a repeated column: the last one counts
        self.criteria: dict[str, tuple[int, int | None]] = {}
        self.no_criterion: set[str] = set()
        self.docs: dict[int | None, dict[str, int | str]] = {}  # corpus -> ext id -> id, or an error message
        self.kinds: dict[str, str] = {}  # annotator -> kind (existing or first seen in the file), once checked
        self.known: dict[str, str] = {}  # annotators already in the store -> kind
        self.seen: set[str] = set()  # row hashes: a line repeating an earlier one adds nothing
        self.last: dict[tuple[Any, ...], int] = {}  # (criterion, triplet, annotator) -> its latest line
        self.superseded: list[int] = []  # lines an annotator's later line on the same triplet replaces
        self.name_max = max_length(col(Annotator.name)) or 300
        self.group_max = max_length(col(Vote.group_id)) or 64
        self.hex = _Hex()

    def _criterion(self, name: str, line: int) -> tuple[int, int | None]:
        """(id, corpus id) of the criterion; a missing one is worded by :func:`criteria.get_criterion`."""
        if name not in self.criteria:
            with Session(self.conn) as s:
                try:
                    c = get_criterion(s, name)
                except InputError as exc:
                    raise InputError(exc.reason, file=self.name, line=line, field="criterion") from None
                self.criteria[name] = (cast(int, c.id), c.corpus_id)
        return self.criteria[name]

    def _resolve_docs(self, corpus_id: int | None, exts: set[str]) -> None:
        """Look up every ext id of one corpus not yet known, 900 at a time."""
        known = self.docs.setdefault(corpus_id, {})
        todo = [e for e in exts - known.keys() if _plain(e)]
        found: dict[str, list[int]] = {}
        for i in range(0, len(todo), _BULK):
            q = select(col(Document.ext_id), col(Document.id)).where(col(Document.ext_id).in_(todo[i:i + _BULK]))
            if corpus_id is not None:
                q = q.where(col(Document.corpus_id) == corpus_id)
            for ext, doc_id in self.conn.execute(q):
                found.setdefault(ext, []).append(cast(int, doc_id))
        for ext in todo:
            ids = found.get(ext, [])
            if len(ids) == 1:
                known[ext] = ids[0]
            elif not ids:
                where = " in the criterion's corpus" if corpus_id is not None else ""
                known[ext] = f"no document with id {ext!r}{where}"
            else:
                known[ext] = f"document id {ext!r} exists in {len(ids)} corpora; give the criterion a corpus"

    def _lookups(self, rows: list[tuple[int, list[str]]]) -> None:
        """Bulk look-ups for a chunk: criteria, annotators and documents not seen yet (no error raised here).

        The chunk's cells a column at a time (one transposition in C, then ``set`` of a column): a set
        comprehension per column walked the rows in Python five times, about 0.2 s at 200k rows."""
        ic, ian, ia, ib, iann = (self.pos[c] for c in REQUIRED[:5])
        if not rows:
            return
        cols = list(zip(*map(itemgetter(1), rows), strict=True))  # every row has the header's width
        names_c = set(cols[ic])
        for name in names_c - self.criteria.keys() - self.no_criterion:
            if name and _plain(name):
                try:
                    self._criterion(name, 0)
                except InputError:  # worded, with its line, when slow_row meets it
                    self.no_criterion.add(name)
        names = [n for n in set(cols[iann]) - self.kinds.keys() - self.known.keys() if n and _plain(n)]
        for i in range(0, len(names), _BULK):
            qa = select(col(Annotator.name), col(Annotator.kind)).where(col(Annotator.name).in_(names[i:i + _BULK]))
            self.known.update({n: k for n, k in self.conn.execute(qa)})
        wanted: dict[int | None, set[str]] = {}
        for name in names_c:  # by criterion, a column at a time (a file has one criterion, or a few)
            crit = self.criteria.get(name)
            if crit is not None:
                sel = cols if len(names_c) == 1 else list(zip(*(v for _, v in rows if v[ic] == name), strict=True))
                wanted.setdefault(crit[1], set()).update(sel[ian], sel[ia], sel[ib])
        for corpus_id, exts in wanted.items():
            self._resolve_docs(corpus_id, exts)

    def chunk(self, rows: list[tuple[int, list[str]]]) -> list[tuple[Any, ...]]:
        """Validate a chunk of rows (in line order) into staging rows (in ``STAGED`` order), repeats dropped."""
        self._lookups(rows)
        ic, ian, ia, ib, iann, ich = (self.pos[c] for c in REQUIRED)
        ik, il, ico, ir, ig = (self.pos.get(c) for c in OPTIONAL)
        criteria, docs, kinds, group_max = self.criteria, self.docs, self.kinds, self.group_max
        seen, last, superseded = self.seen, self.last, self.superseded
        sha1, isfinite, out, hx = hashlib.sha1, math.isfinite, [], self.hex
        for line, v in rows:  # the hot loop: any doubt -> slow_row, which words the error
            r = None
            crit, anc, ea, eb, ann, raw_choice = v[ic], v[ian], v[ia], v[ib], v[iann], v[ich]
            c = criteria.get(crit)
            lower = raw_choice.lower()
            choice = CHOICE_MAP.get(lower)
            kind = (v[ik].lower() if ik is not None else "") or "human"
            group = v[ig] if ig is not None else ""
            whole = "\x1f".join(v)  # _plain, inline
            if (c is not None and choice is not None and kinds.get(ann) == kind and len(group) <= group_max
                    and "\x00" not in whole and (whole.isascii() or _plain(whole))):
                d = docs[c[1]]
                anchor, a, b = d.get(anc), d.get(ea), d.get(eb)
                if type(anchor) is int and type(a) is int and type(b) is int and a != b and anchor not in (a, b):
                    try:
                        lat = float(v[il]) if il is not None and v[il] else None
                        conf = float(v[ico]) if ico is not None and v[ico] else None
                    except ValueError:
                        lat = conf = math.nan
                    if (lat is None or isfinite(lat)) and (conf is None or 0.0 <= conf <= 1.0):
                        # swapped as 0/1, not bool: sqlite3 binds a bool through its adapter look-up (0.13 s
                        # more at 200k rows); stored alike (SQLite 0/1, PostgreSQL's COPY reads 0/1 as boolean)
                        first, second, swapped = (a, b, 0) if a < b else (b, a, 1)
                        if swapped:
                            choice = _FLIP.get(choice, choice)
                        digest = sha1("\x1f".join((crit, anc, ea, eb, ann, lower, group)).encode()).hexdigest()
                        r = (line, c[0], anchor, first, second, ann, choice, swapped, lat, conf,
                             (v[ir] if ir is not None else "") or None, group or None,
                             f"import:{hx[c[0]]}{hx[anchor]}{hx[first]}{hx[second]}:{digest[:32]}", "active")
            if r is None:
                r = self.slow_row(line, v)
            # a line repeating an earlier one (same hash) adds nothing; an annotator voting again on a
            # triplet: the last line counts
            if r[12] in seen:
                continue
            seen.add(r[12])
            key = r[1:6]
            prev = last.get(key)
            if prev is not None:
                superseded.append(prev)
            last[key] = line
            out.append(r)
        return out

    def _in_file(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Drop repeated lines (same hash); an annotator voting again on a triplet: the last line counts.

        (What :meth:`chunk` does inline, for rows checked one by one.)"""
        seen, last, superseded, out = self.seen, self.last, self.superseded, []
        for r in rows:
            if r[12] in seen:
                continue
            seen.add(r[12])
            key = r[1:6]
            prev = last.get(key)
            if prev is not None:
                superseded.append(prev)
            last[key] = r[0]
            out.append(r)
        return out

    def _doc(self, corpus_id: int | None, ext: str, line: int, fld: str) -> int:
        found = self.docs.get(corpus_id, {}).get(ext)
        if found is None:
            self._resolve_docs(corpus_id, {ext})
            found = self.docs[corpus_id][ext]
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

    def slow_row(self, line: int, values: list[str]) -> tuple[Any, ...]:
        """One row checked field by field: the first problem raises ``file:line: field``."""
        vals = dict(zip(self.header, values, strict=True))
        f = self.name
        for c in REQUIRED:
            if not vals.get(c):
                raise InputError("empty value", file=f, line=line, field=c)
            check_string(vals[c], f, line, c)  # a NUL would reach PostgreSQL as a query parameter
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
                external_id(crit_id, anchor, first, second, digest), "active")
