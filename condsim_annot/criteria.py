"""Criteria: natural-language definitions of similarity, each a view of the corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib
import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col

from .db import Store
from .errors import CondsimError, InputError
from .models import Corpus, Criterion, utcnow

NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def default_instruction(c: Criterion) -> str:
    """The query-side prompt for instruction-following embedders."""
    return c.instruction or (
        f"Represent this text for finding texts similar under the criterion: {c.description}\nText: ")


def _check_name(name: str, *, file: str | None = None, line: int | None = None) -> None:
    if not name or not set(name) <= NAME_OK:
        raise InputError(f"invalid criterion name {name!r}: use letters, digits, '-', '_', '.' or ':'",
                         file=file, line=line, field="name")


def _corpus_id(session: Session, corpus: str | None) -> int | None:
    if corpus is None:
        return None
    c = session.scalars(select(Corpus).where(col(Corpus.name) == corpus)).first()
    if c is None:
        raise CondsimError(f"no corpus named {corpus!r}: ingest documents into it first")
    return c.id


def add_criterion(store: Store, name: str, description: str, *, instruction: str | None = None,
                  corpus: str | None = None) -> Criterion:
    _check_name(name)
    if not description or not description.strip():
        raise InputError("empty description", field="description")
    with store.transaction() as s:
        if s.scalars(select(Criterion).where(col(Criterion.name) == name)).first() is not None:
            raise CondsimError(
                f"criterion {name!r} already exists (use `condsim-annot criteria edit {name}` to change it)")
        c = Criterion(name=name, description=description.strip(), instruction=instruction,
                      corpus_id=_corpus_id(s, corpus))
        s.add(c)
        try:
            s.flush()
        except IntegrityError:
            raise CondsimError(f"criterion {name!r} already exists") from None
    return c


def edit_criterion(store: Store, name: str, *, description: str | None = None,
                   instruction: str | None = None) -> Criterion:
    with store.transaction() as s:
        c = get_criterion(s, name)
        changed = False
        if description is not None and description.strip() != c.description:
            c.description, changed = description.strip(), True
        if instruction is not None and instruction != c.instruction:
            c.instruction, changed = instruction, True
        if changed:
            c.version += 1
            c.updated_at = utcnow()
        s.add(c)
    return c


def get_criterion(session: Session, name: str) -> Criterion:
    """The criterion called ``name``; the one place a missing name becomes a user error (naming the known ones)."""
    c = session.scalars(select(Criterion).where(col(Criterion.name) == name)).first()
    if c is None:
        names = session.scalars(select(col(Criterion.name)).order_by(col(Criterion.name))).all()
        hint = f" (known: {', '.join(names)})" if names else " (none defined yet: `condsim-annot criteria add`)"
        raise InputError(f"no criterion named {name!r}{hint}")
    return c


def load_criterion(store: Store, name: str) -> Criterion:
    """:func:`get_criterion` in a session of its own, for callers that hold a store rather than a session."""
    with store.session() as s:
        return get_criterion(s, name)


def list_criteria(store: Store) -> list[Criterion]:
    with store.session() as s:
        return list(s.scalars(select(Criterion).order_by(col(Criterion.name))).all())


def _parse_file(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", file=path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", file=path, line=line) from None
    ext = p.suffix.lower()
    if ext in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(f"malformed YAML: {getattr(exc, 'problem', exc)}", file=path,
                             line=(mark.line + 1) if mark else None) from None
    elif ext == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"malformed TOML: {exc}", file=path) from None
    else:
        raise InputError(f"unknown file type {ext or '(no extension)'!r}: expected .yaml, .yml or .toml", file=path)
    if isinstance(data, dict):
        data = data.get("criteria", data)
        if isinstance(data, dict):  # mapping name -> description | {description, ...}
            data = [({"name": k, "description": v} if isinstance(v, str) else {"name": k, **v})
                    for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError("expected a list of criteria (or a 'criteria' key holding one)", file=path)
    return data


def _line_of(path: str, name: str) -> int | None:
    for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        if name in line and "name" in line or line.strip().startswith(f"{name}:"):
            return n
    return None


def load_criteria_file(store: Store, path: str, *, update_existing: bool = False) -> list[Criterion]:
    """Load every criterion of a YAML/TOML file in one transaction."""
    items = _parse_file(path)
    out: list[Criterion] = []
    with store.transaction() as s:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(f"entry {i + 1} is not a mapping", file=path)
            name = str(item.get("name") or "")
            line = _line_of(path, name) if name else None
            if not name:
                raise InputError(f"entry {i + 1}: missing", file=path, field="name")
            _check_name(name, file=path, line=line)
            desc = item.get("description")
            if not isinstance(desc, str) or not desc.strip():
                raise InputError(f"criterion {name!r}: missing or empty", file=path, line=line, field="description")
            if name in seen:
                raise InputError(f"criterion {name!r} appears twice in this file", file=path, line=line, field="name")
            seen.add(name)
            existing = s.scalars(select(Criterion).where(col(Criterion.name) == name)).first()
            if existing is not None:
                if not update_existing:
                    raise InputError(f"criterion {name!r} already exists (pass --update to change it)", file=path,
                                     line=line, field="name")
                if existing.description != desc.strip() or existing.instruction != item.get("instruction"):
                    existing.description = desc.strip()
                    existing.instruction = item.get("instruction")
                    existing.version += 1
                    existing.updated_at = utcnow()
                    s.add(existing)
                out.append(existing)
                continue
            c = Criterion(name=name, description=desc.strip(), instruction=item.get("instruction"),
                          corpus_id=_corpus_id(s, item.get("corpus")))
            s.add(c)
            out.append(c)
        s.flush()
    return out
