"""Cached LLM transforms of documents under a criterion (for the proposers' LLM methods).

Public API (sync; safe to call from a running event loop too)::

    from condsim_annot.llm.transform import transform_documents, endpoint_status

    ok, why = endpoint_status(base_url)          # (False, "no LLM endpoint configured: ...") -> skip
    words = transform_documents(store, "proof-strategy", [1, 2, 3], task="in-one-word",
                                model="gpt-4.1-mini", base_url=None, concurrency=8)
    words[1]          # -> "induction"
    words.failed      # {doc_id: "why"} for documents with no usable answer (never raises for them)
    words.stats       # CallStats: calls, cached, tokens_in/out, errors, ...

``task`` is ``"in-one-word"`` (one word or hyphenated term) or ``"rewrite"`` (the
document reduced to what matters under the criterion, at most ``max_words``
words).  Results are cached in the ``llmcall`` log per (model, prompt version,
criterion wording, document text, parameters): running it again makes zero
calls.  Raises :class:`~condsim_annot.llm.client.LLMError` (a CondsimError) when
no endpoint/model is configured or the server refuses the key / model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..criteria import load_criterion
from ..db import Store
from ..errors import CondsimError, InputError
from ..models import Criterion
from ..store_api import documents_by_id
from .client import (
    CallStats,
    LLMClient,
    complete_with_retries,
    endpoint_status,
    json_schema_format,
    resolve_endpoint,
    run_sync,
)
from .parse import parse_text
from .templates import document_block, load_prompt

__all__ = ["transform_documents", "endpoint_status", "TransformResult", "TRANSFORM_TASKS"]

TRANSFORM_TASKS = ("in-one-word", "rewrite")
Progress = Callable[[int, int], None]
CHUNK = 2000  # documents prepared and scheduled at a time


class TransformResult(dict):
    """``{doc_id: text}`` for the documents that got an answer, plus ``failed`` and ``stats``."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.failed: dict[int, str] = {}
        self.stats: CallStats = CallStats()
        self.prompt_version: str | None = None


def transform_request(task: str, criterion: Criterion, text: str, model: str, *, temperature: float = 0.0,
                      max_words: int = 60, structured: bool = True) -> tuple[dict, Any]:
    """(request, template) for one document."""
    tpl = load_prompt(task)
    values = {"criterion_name": criterion.name, "criterion": criterion.description,
              "document": document_block(text, "document"), "max_words": str(max_words)}
    req: dict[str, Any] = {
        "model": model,
        "messages": tpl.render(**values),
        "temperature": temperature,
        "max_tokens": 24 if task == "in-one-word" else max(64, int(max_words * 2.5)),
    }
    if structured:
        req["response_format"] = json_schema_format("transform", {"text": {"type": "string"}}, ["text"])
    return req, tpl


def transform_documents(
    store: Store,
    criterion_name: str,
    doc_ids: Iterable[int],
    task: str = "in-one-word",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_retries: int = 5,
    temperature: float = 0.0,
    max_words: int = 60,
    structured: bool = True,
    invalid_retries: int = 1,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> TransformResult:
    """Transform documents under a criterion with an LLM; cached, concurrent, never stops on one bad reply.

    ``progress(done, total)`` is called as documents finish.  ``dry_run`` makes no
    calls: the result holds the cached answers and ``stats.would_call`` /
    ``stats.est_tokens_in`` tell what a real run would send.
    """
    if task not in TRANSFORM_TASKS:
        raise CondsimError(f"unknown transform task {task!r}; expected one of {', '.join(TRANSFORM_TASKS)}")
    endpoint = resolve_endpoint(model, base_url, api_key_env, require_key=not dry_run,
                                timeout=timeout, max_retries=max_retries, concurrency=concurrency)
    crit = load_criterion(store, criterion_name)
    ids = list(dict.fromkeys(int(i) for i in doc_ids))
    with store.session() as s:
        docs = documents_by_id(s, ids)
    missing = [i for i in ids if i not in docs]
    if missing:
        raise InputError(f"no documents with ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    result = TransformResult()
    one_word = task == "in-one-word"

    def parse(text: str | None) -> tuple[bool, Any]:
        v = parse_text(text, one_word=one_word)
        return v is not None, {"text": v}

    async def go() -> None:
        from .client import request_hash

        async with LLMClient(store, endpoint, dry_run=dry_run) as client:
            done = 0

            async def one(i: int, req: dict, tpl) -> None:
                nonlocal done
                result.prompt_version = tpl.version
                res, _ = await complete_with_retries(
                    client, req, retry_message=tpl.extra.get("retry"),
                    invalid_retries=0 if dry_run else invalid_retries,
                    task=task, parse=parse, prompt_version=tpl.version, criterion_id=crit.id,
                    meta={"document_id": i,
                          "content_hash": docs[i].content_hash}, expect_tokens_out=req["max_tokens"] // 2,
                )
                if res.ok:
                    result[i] = res.parsed["text"]
                elif res.status != "dry":
                    result.failed[i] = res.error or f"unreadable reply: {(res.text or '')[:100]!r}"
                done += 1
                if progress:
                    progress(done, len(ids))

            for c0 in range(0, len(ids), CHUNK):  # bounded memory for large corpora
                chunk = ids[c0:c0 + CHUNK]
                reqs = [transform_request(task, crit, docs[i].text, endpoint.model, temperature=temperature,
                                          max_words=max_words, structured=structured) for i in chunk]
                client.prefetch([request_hash(r, 0) for r, _ in reqs])
                await asyncio.gather(*(one(i, r, tpl) for i, (r, tpl) in zip(chunk, reqs, strict=True)))
            result.stats = client.stats

    run_sync(go())
    return result
