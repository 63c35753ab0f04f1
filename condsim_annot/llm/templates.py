"""Prompt templates from ``prompts/*.toml`` (installed as ``condsim_annot.prompts``).

A template has a ``task``, a ``version`` and ``system`` / ``user`` texts with
``$placeholders`` (:class:`string.Template`, so JSON braces in a prompt need no
escaping).  Documents are untrusted: :func:`document_block` wraps each in
``<document role="...">`` tags and neutralises anything inside that looks like
such a tag, so a document cannot close its own block or open a fake one.

``$CONDSIM_PROMPTS`` may name a folder whose ``<task>.toml`` files replace the
bundled ones (give them a new ``version``: the version is part of a judge's identity).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import tomllib

from ..errors import CondsimError

TASKS = ("judge", "in-one-word", "rewrite")
ENV_PROMPTS = "CONDSIM_PROMPTS"

_TAG = re.compile(r"<\s*(/?)\s*(document)", re.IGNORECASE)


@dataclass(frozen=True)
class PromptTemplate:
    task: str
    version: str
    system: str
    user: str
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with the placeholders filled (a missing value is an error)."""
        try:
            user = Template(self.user).substitute(**values)
            system = Template(self.system).substitute(**values)
        except KeyError as exc:
            raise CondsimError(f"prompt {self.source}: no value for placeholder ${exc.args[0]}") from None
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def escape_document(text: str) -> str:
    """Make ``<document`` / ``</document`` inside a text inert (``<`` becomes ``‹``)."""
    return _TAG.sub(lambda m: "\u2039" + m.group(1) + m.group(2), text)


def document_block(text: str, role: str) -> str:
    return f'<document role="{role}">\n{escape_document(text)}\n</document>'


def _read(path_or_res, source: str) -> PromptTemplate:
    try:
        data = tomllib.loads(path_or_res.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CondsimError(f"prompt file {source}: {exc}") from None
    missing = [k for k in ("task", "version", "system", "user") if not isinstance(data.get(k), str)]
    if missing:
        raise CondsimError(f"prompt file {source}: missing {', '.join(missing)}")
    extra = {k: v for k, v in data.items() if k not in ("task", "version", "system", "user")}
    return PromptTemplate(data["task"], data["version"], data["system"], data["user"], extra, source)


def load_prompt(task: str) -> PromptTemplate:
    """The template for ``task`` (``$CONDSIM_PROMPTS/<task>.toml`` first, then the bundled one)."""
    if task not in TASKS:
        raise CondsimError(f"unknown prompt task {task!r}; expected one of {', '.join(TASKS)}")
    override = os.environ.get(ENV_PROMPTS)
    path, stamp = None, None
    if override:
        p = Path(override).expanduser() / f"{task}.toml"
        if p.exists():
            path, stamp = str(p), p.stat().st_mtime_ns
    return _load(task, path, stamp)


@lru_cache(maxsize=32)
def _load(task: str, path: str | None, _stamp: int | None) -> PromptTemplate:
    if path:
        return _read(Path(path), path)
    res = resources.files("condsim_annot.prompts") / f"{task}.toml"
    return _read(res, f"prompts/{task}.toml")
