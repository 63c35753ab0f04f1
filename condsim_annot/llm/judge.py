"""The LM judge stage: votes on triplets from any OpenAI-compatible model, in both presentation orders.

A judge is the triple (model, prompt version, parameters); it is an annotator of
kind ``llm`` named ``llm:<model>:<prompt version>:<short hash of parameters>``.
Every triplet is judged twice, once with the canonical first candidate shown as
"A" (``swapped=False``) and once with it shown as "B" (``swapped=True``); both
answers are stored as votes (source ``llm``, choice in canonical terms,
``confidence`` = the probability of the chosen label when the server returns
logprobs).  How often the two answers disagree is the judge's position bias
(:func:`judge_report`).

All requests go through :class:`~condsim_annot.llm.client.LLMClient`: logged,
cached (a re-run makes zero calls; a killed run resumes), retried, cost-tracked.
A reply that cannot be read is logged as ``invalid``, asked again up to
``invalid_retries`` times, and then left without a vote; it never stops the batch.

Public API::

    run_judge(store, "proof-strategy", model="gpt-4.1-mini", concurrency=8, limit=500) -> JudgeRun
    judge_margin(store, "proof-strategy", [(anchor, x, y), ...], model=...) -> {(anchor, x, y): margin in [-1, 1]}
    judge_report(store, "proof-strategy") -> [per-judge dict: votes, pairs, consistency, a_rate, tokens, cost]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import case, func, select

from ..criteria import load_criterion
from ..db import Store
from ..models import Annotator, Criterion, Triplet, Vote
from ..store_api import (
    LETTER_CHOICE,
    ActiveVoteExists,
    canonical,
    documents_by_id,
    get_or_create_annotator,
    record_vote,
    to_canonical_choice,
)
from .client import (
    CallResult,
    CallStats,
    LLMClient,
    complete_with_retries,
    json_schema_format,
    request_hash,
    resolve_endpoint,
    run_sync,
)
from .parse import label_confidence, parse_judge
from .prices import estimate_cost, load_prices
from .tables import LLMCall
from .templates import PromptTemplate, document_block, escape_document, load_prompt

Progress = Callable[[int, int], None]
CHUNK = 2000  # presentations prepared and scheduled at a time


@dataclass(frozen=True)
class JudgeParams:
    """What defines a judge besides the model and prompt (``identity``), plus how to ask."""

    temperature: float = 0.0
    max_tokens: int | None = None  # default: 20, or 300 with a rationale
    allow_tie: bool = False
    rationale: bool = False
    structured: bool = True  # ask for a JSON schema (response_format) where supported
    logprobs: bool = True  # ask for logprobs (confidence) where supported
    top_logprobs: int = 5
    invalid_retries: int = 2

    @property
    def tokens(self) -> int:
        return self.max_tokens or (300 if self.rationale else 20)

    def identity(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.tokens, "allow_tie": self.allow_tie,
                "rationale": self.rationale, "structured": self.structured}


def judge_name(model: str, prompt_version: str, params: JudgeParams) -> str:
    h = hashlib.sha256(json.dumps(params.identity(), sort_keys=True).encode()).hexdigest()[:8]
    return f"llm:{model}:{prompt_version}:{h}"


def judge_request(tpl: PromptTemplate, criterion: Criterion, anchor: str, a: str, b: str, model: str,
                  params: JudgeParams) -> dict:
    key = "answer_format" + ("_rationale" if params.rationale else "") + ("_tie" if params.allow_tie else "")
    values = {
        "criterion_name": criterion.name, "criterion": criterion.description,
        "anchor": document_block(anchor, "anchor"), "a": document_block(a, "A"), "b": document_block(b, "B"),
        "answer_format": tpl.extra.get(key) or tpl.extra.get("answer_format", ""),
    }
    req: dict[str, Any] = {"model": model, "messages": tpl.render(**values), "temperature": params.temperature,
                           "max_tokens": params.tokens}
    if params.structured:
        labels = ["A", "B", "tie"] if params.allow_tie else ["A", "B"]
        props: dict[str, Any] = {}
        if params.rationale:
            props["rationale"] = {"type": "string"}
        props["answer"] = {"type": "string", "enum": labels}
        req["response_format"] = json_schema_format("judgement", props, list(props))
    if params.logprobs:
        req["logprobs"] = True
        req["top_logprobs"] = params.top_logprobs
    return req


@dataclass
class Judgement:
    label: str | None  # presented terms: A | B | tie | None
    confidence: float | None
    rationale: str | None
    result: CallResult
    attempts: int


class _Judge:
    """Shared machinery of run_judge and judge_margin."""

    def __init__(self, store: Store, criterion: Criterion, endpoint, params: JudgeParams, *, dry_run: bool):
        self.store, self.criterion, self.endpoint = store, criterion, endpoint
        self.params, self.dry_run = params, dry_run
        self.tpl = load_prompt("judge")
        self.name = judge_name(endpoint.model, self.tpl.version, params)
        self.annotator_id: int | None = None

    def ensure_annotator(self) -> int | None:
        if self.dry_run:
            with self.store.session() as s:
                a = s.scalars(select(Annotator).where(Annotator.name == self.name)).first()
                self.annotator_id = a.id if a else None
            return self.annotator_id
        with self.store.transaction() as s:
            a = get_or_create_annotator(s, self.name, kind="llm", model=self.endpoint.model,
                                        prompt_version=self.tpl.version, params=self.params.identity())
            self.annotator_id = a.id
        return self.annotator_id

    def request(self, anchor: str, first: str, second: str, swapped: bool) -> dict:
        a, b = (second, first) if swapped else (first, second)
        return judge_request(self.tpl, self.criterion, anchor, a, b, self.endpoint.model, self.params)

    def parse(self, text: str | None, quoted: Sequence[str] = ()) -> tuple[bool, Any]:
        p = parse_judge(text, allow_tie=self.params.allow_tie, quoted=quoted)
        return p.ok, p.as_dict()

    def record(self, t: Triplet, sw: bool, jd: Judgement) -> bool:
        """Store ``jd`` as this judge's vote on presentation (t, sw); False when it already has one.

        A vote under an older wording of the criterion is superseded; a concurrent run of this judge
        that voted this presentation first wins (one active vote, enforced by the database)."""
        assert jd.label is not None and self.annotator_id is not None
        presented = LETTER_CHOICE[jd.label]
        version = self.criterion.version
        with suppress(ActiveVoteExists), self.store.transaction() as s:
            prev = s.scalars(select(Vote).where(Vote.triplet_id == t.id, Vote.annotator_id == self.annotator_id,
                                                Vote.swapped == sw, Vote.state == "active")).all()
            if any(_vote_version(p.meta) == version for p in prev):
                return False
            for p in prev:  # votes under an older wording of the criterion
                p.state = "superseded"
                s.add(p)
            v = record_vote(s, t.id, self.annotator_id, to_canonical_choice(presented, sw), source="llm", swapped=sw,
                            latency_ms=jd.result.latency_ms, rationale=jd.rationale, confidence=jd.confidence,
                            supersede=False, meta={"llmcall_id": jd.result.call_id, "label": jd.label,
                                                   "attempts": jd.attempts, "cached": jd.result.cached,
                                                   "criterion_version": version})
            if prev:
                v.replaces_id = prev[-1].id
                s.add(v)
            return True
        return False

    async def ask(self, client: LLMClient, req: dict, meta: dict, docs: Sequence[str] = ()) -> Judgement:
        """Ask until readable; ``docs`` (the texts shown) are quotations, never the reply's answer."""
        quoted = [v for d in docs for v in (d, escape_document(d))]
        res, n = await complete_with_retries(
            client, req, retry_message=self.tpl.extra.get("retry"),
            invalid_retries=0 if self.dry_run else self.params.invalid_retries,
            task="judge", parse=lambda text: self.parse(text, quoted), prompt_version=self.tpl.version,
            annotator_id=self.annotator_id,
            criterion_id=self.criterion.id, meta=meta, expect_tokens_out=6 if not self.params.rationale else 60,
        )
        if not res.ok:
            return Judgement(None, None, None, res, n)
        label = res.parsed["label"]
        conf = label_confidence(res.logprobs, label)
        return Judgement(label, conf["p_norm"] if conf else None, res.parsed.get("rationale"), res, n)


@dataclass
class JudgeRun:
    judge: str
    criterion: str
    model: str
    prompt_version: str
    server: str = ""  # base URL without credentials
    triplets: int = 0  # triplets considered (after --limit)
    requests: int = 0  # presentations still needing a vote
    already_voted: int = 0  # presentations skipped: the judge had voted on them
    votes_added: int = 0
    invalid: int = 0  # presentations left without a vote: unreadable after retries
    errors: int = 0  # presentations left without a vote: server errors after retries
    last_error: str | None = None  # the last server error (scrubbed), for the summary
    dry_run: bool = False
    stats: CallStats = field(default_factory=CallStats)
    cost_usd: float | None = None  # of the calls made now (dry run: estimated for the calls it would make)
    bias: dict[str, Any] = field(default_factory=dict)  # judge_report row of this judge after the run

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.as_dict()
        return d


def _vote_version(meta: dict | None) -> int | None:
    return (meta or {}).get("criterion_version")


def _resolve(store: Store, criterion_name: str, model, base_url, api_key_env, dry_run, **kw):
    endpoint = resolve_endpoint(model, base_url, api_key_env, require_key=not dry_run, **kw)
    return endpoint, load_criterion(store, criterion_name)


def run_judge(
    store: Store,
    criterion_name: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    limit: int | None = None,
    dry_run: bool = False,
    params: JudgeParams | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    prices_file: str | None = None,
    progress: Progress | None = None,
    retry_invalid: bool = False,
) -> JudgeRun:
    """Judge the criterion's triplets (highest priority first; ``limit`` of them) in both orders.

    Presentations the judge has already voted on (under the criterion's current
    version) are skipped, and answered requests come from the call log, so a second
    run makes zero calls and a killed run resumes.  After ``criteria edit`` the new
    wording is a new prompt: the judge votes again and the old votes are superseded.
    ``retry_invalid``: ask again the requests whose logged reply was unreadable (after fixing the server).
    """
    params = params or JudgeParams()
    prices = load_prices(prices_file)
    endpoint, crit = _resolve(store, criterion_name, model, base_url, api_key_env, dry_run, timeout=timeout,
                              max_retries=max_retries, concurrency=concurrency, backoff_base=backoff_base)
    j = _Judge(store, crit, endpoint, params, dry_run=dry_run)
    j.ensure_annotator()
    run = JudgeRun(judge=j.name, criterion=crit.name, model=endpoint.model, prompt_version=j.tpl.version,
                   dry_run=dry_run,
                   server=endpoint.safe_base_url)
    triplets, jobs, docs = _pending(store, j, limit)
    run.triplets, run.requests, run.already_voted = len(triplets), len(jobs), 2 * len(triplets) - len(jobs)

    async def go() -> CallStats:
        async with LLMClient(store, endpoint, dry_run=dry_run, retry_invalid=retry_invalid) as client:
            n_done = 0

            async def one(t: Triplet, sw: bool, req: dict) -> None:
                nonlocal n_done
                jd = await j.ask(client, req, {"triplet_id": t.id, "swapped": sw},
                                 [docs[i].text for i in (t.anchor_id, t.first_id, t.second_id)])
                if jd.label is not None and not dry_run:
                    run.votes_added += j.record(t, sw, jd)
                elif jd.result.status == "invalid":
                    run.invalid += 1
                elif jd.result.status == "error":
                    run.errors += 1
                    run.last_error = jd.result.error
                n_done += 1
                if progress:
                    progress(n_done, len(jobs))

            for c0 in range(0, len(jobs), CHUNK):  # bounded memory for very large runs
                chunk = jobs[c0:c0 + CHUNK]
                reqs = [j.request(docs[t.anchor_id].text, docs[t.first_id].text, docs[t.second_id].text, sw)
                        for t, sw in chunk]
                client.prefetch([request_hash(r, 0) for r in reqs])
                await asyncio.gather(*(one(t, sw, r) for (t, sw), r in zip(chunk, reqs, strict=True)))
            return client.stats

    run.stats = st = run_sync(go())
    tokens = (st.est_tokens_in, st.est_tokens_out) if dry_run else (st.tokens_in, st.tokens_out)
    run.cost_usd = estimate_cost(endpoint.model, *tokens, prices, endpoint.base_url)
    rows = judge_report(store, crit.name, prices_file=prices_file, base_url=endpoint.base_url, judge=j.name)
    run.bias = rows[0] if rows else {}
    return run


def _pending(store: Store, j: _Judge, limit: int | None) -> tuple[list[Triplet], list[tuple[Triplet, bool]], dict]:
    """(triplets by priority, presentations still without this judge's vote, their documents)."""
    crit = j.criterion
    with store.session() as s:
        q = select(Triplet).where(Triplet.criterion_id == crit.id).order_by(Triplet.priority.desc(), Triplet.id)
        if limit is not None:
            q = q.limit(limit)
        triplets = list(s.scalars(q).all())
        done: set[tuple[int, bool]] = set()
        if j.annotator_id is not None and triplets:
            ids = [t.id for t in triplets]
            for i in range(0, len(ids), 900):
                for tid, sw, meta in s.execute(select(Vote.triplet_id, Vote.swapped, Vote.meta).where(
                        Vote.annotator_id == j.annotator_id, Vote.state == "active",
                        Vote.triplet_id.in_(ids[i:i + 900]))).all():
                    if _vote_version(meta) == crit.version:  # a vote on an older wording is judged again
                        done.add((tid, bool(sw)))
        docs = documents_by_id(s, {d for t in triplets for d in (t.anchor_id, t.first_id, t.second_id)})
    jobs = [(t, sw) for t in triplets for sw in (False, True) if (t.id, sw) not in done]
    return triplets, jobs, docs


class MarginResult(dict):
    """``{(anchor, x, y): margin}`` plus ``failed`` (triples with no readable answer) and ``stats``."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.failed: list[tuple[int, int, int]] = []
        self.stats: CallStats = CallStats()
        self.judge: str | None = None


def judge_margin(
    store: Store,
    criterion_name: str,
    triples: Iterable[tuple[int, int, int]],
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    params: JudgeParams | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MarginResult:
    """Score candidate triplets with the judge, without storing votes (for an ``lm-judge`` proposer).

    For each ``(anchor, x, y)`` (document ids; need not be stored triplets) the judge
    is asked in both orders; ``margin`` is the mean over the readable answers of
    ``+p`` when x is chosen, ``-p`` when y is chosen, ``0`` for a tie, where ``p`` is
    the label probability (1 without logprobs).  So +1: x clearly more similar,
    -1: y, near 0: uncertain or position-inconsistent (informative to ask people).
    Triples with no readable answer are in ``.failed``, not in the dict.
    The requests are the judge's own (canonical order), so they share its cache.
    """
    params = params or JudgeParams()
    endpoint, crit = _resolve(store, criterion_name, model, base_url, api_key_env, dry_run, timeout=timeout,
                              max_retries=max_retries, concurrency=concurrency)
    j = _Judge(store, crit, endpoint, params, dry_run=dry_run)
    j.ensure_annotator()
    triples = list(dict.fromkeys((int(a), int(x), int(y)) for a, x, y in triples))
    canon = {tr: canonical(*tr) for tr in triples}
    with store.session() as s:
        docs = documents_by_id(s, {d for tr in triples for d in tr})
    missing = sorted({d for tr in triples for d in tr} - set(docs))
    if missing:
        from ..errors import InputError

        raise InputError(f"no documents with ids {missing[:10]}")
    out = MarginResult()
    out.judge = j.name

    async def go() -> CallStats:
        async with LLMClient(store, endpoint, dry_run=dry_run) as client:
            n_done = 0

            async def one(tr: tuple[int, int, int], reqs: tuple[dict, dict]) -> None:
                nonlocal n_done
                shown = [docs[i].text for i in canon[tr][:3]]
                both = await asyncio.gather(*(j.ask(client, reqs[k], {"margin": list(tr), "swapped": sw}, shown)
                                              for k, sw in enumerate((False, True))))
                scores = _margins(both, x_is_second=canon[tr][3])
                if scores:
                    out[tr] = sum(scores) / len(scores)
                elif not dry_run:
                    out.failed.append(tr)
                n_done += 1
                if progress:
                    progress(n_done, len(triples))

            for c0 in range(0, len(triples), CHUNK // 2):
                chunk = triples[c0:c0 + CHUNK // 2]
                reqs = []
                for tr in chunk:
                    a, f, sec, _ = canon[tr]
                    reqs.append(tuple(j.request(docs[a].text, docs[f].text, docs[sec].text, sw) for sw in (False,
                                                                                                           True)))
                client.prefetch([request_hash(r, 0) for pair in reqs for r in pair])
                await asyncio.gather(*(one(tr, r) for tr, r in zip(chunk, reqs, strict=True)))
            return client.stats

    out.stats = run_sync(go())
    return out


def _margins(both: Sequence[Judgement], *, x_is_second: bool) -> list[float]:
    """Per readable answer (unswapped, swapped): +p when x was chosen, -p for y, 0 for a tie."""
    scores = []
    for sw, jd in zip((False, True), both, strict=True):
        if jd.label is None:
            continue
        if jd.label == "tie":
            scores.append(0.0)
            continue
        chose_first = (jd.label == "A") != sw  # canonical first chosen?
        p = jd.confidence if jd.confidence is not None else 1.0
        scores.append(p if chose_first != x_is_second else -p)
    return scores


def judge_report(
    store: Store,
    criterion_name: str,
    *,
    prices_file: str | None = None,
    base_url: str | None = None,
    judge: str | None = None,
) -> list[dict[str, Any]]:
    """Per LM judge on a criterion: votes, position bias, invalid replies, tokens and estimated cost.

    * ``pairs``: triplets the judge answered in both orders;
    * ``consistency``: share of those where both answers pick the same candidate;
      ``position_flips`` = 1 - consistency: how often the answer follows the order;
    * ``a_rate``: share of A/B answers that chose the candidate shown as A (0.5 = no position preference);
    * ``attention_checks`` / ``attention_correct``: votes on triplets with a known answer;
    * ``tokens_in`` / ``tokens_out`` / ``cost_usd``: every logged call of the judge (cost None when the price
      is unknown).
    """
    crit = load_criterion(store, criterion_name)
    prices = load_prices(prices_file)
    out = []
    with store.session() as s:
        q = select(Annotator).where(Annotator.kind == "llm").order_by(Annotator.name)
        if judge:
            q = q.where(Annotator.name == judge)
        for a in s.scalars(q).all():
            votes = s.execute(select(Vote.triplet_id, Vote.swapped, Vote.choice, Vote.confidence, Triplet.expected)
                              .join(Triplet, Triplet.id == Vote.triplet_id)
                              .where(Vote.annotator_id == a.id, Vote.state == "active",
                                     Triplet.criterion_id == crit.id)).all()
            calls = s.execute(select(func.count(), func.sum(LLMCall.tokens_in), func.sum(LLMCall.tokens_out),
                                     func.sum(case((LLMCall.status == "invalid", 1), else_=0)),
                                     func.sum(case((LLMCall.status == "error", 1),
                                                   else_=0)), func.max(LLMCall.base_url))
                              .where(LLMCall.annotator_id == a.id, LLMCall.criterion_id == crit.id)).one()
            if not votes and not calls[0]:
                continue
            by_t: dict[int, dict[bool, str]] = {}
            a_ab = a_hits = 0
            confs = [v.confidence for v in votes if v.confidence is not None]
            for v in votes:
                by_t.setdefault(v.triplet_id, {})[bool(v.swapped)] = v.choice
                if v.choice in ("first", "second"):
                    a_ab += 1
                    a_hits += (v.choice == "first") != bool(v.swapped)
            checks = [v for v in votes if v.expected in ("first", "second")]
            pairs = [d for d in by_t.values() if len(d) == 2]
            consistent = sum(1 for d in pairs if d[False] == d[True])
            tin, tout = int(calls[1] or 0), int(calls[2] or 0)
            out.append({
                "judge": a.name, "model": a.model, "prompt_version": a.prompt_version, "votes": len(votes),
                "triplets": len(by_t), "pairs": len(pairs),
                "consistency": consistent / len(pairs) if pairs else None,
                "position_flips": 1 - consistent / len(pairs) if pairs else None,
                "a_rate": a_hits / a_ab if a_ab else None,
                "mean_confidence": sum(confs) / len(confs) if confs else None,
                "attention_checks": len(checks),
                "attention_correct": sum(1 for v in checks if v.choice == v.expected),
                "calls": int(calls[0] or 0), "invalid_calls": int(calls[3] or 0), "error_calls": int(calls[4] or 0),
                "tokens_in": tin, "tokens_out": tout,
                "cost_usd": estimate_cost(a.model or "", tin, tout, prices, base_url or calls[5]),
            })
    return out
