"""An async client for any OpenAI-compatible chat-completions API, with a call log that is also a cache.

* The official ``openai`` SDK (:class:`openai.AsyncOpenAI`), configured by
  arguments or the usual ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (or any other
  variable named by ``api_key_env``).  Works with OpenAI, vLLM, Ollama and
  llama.cpp's server.  The key is used for the HTTP header only: it is never
  stored, and it is scrubbed from every error message that is stored or shown.
* Every logical request is hashed (:func:`request_hash`: model, messages, sampling
  parameters, attempt number; not the URL or the key) and logged in the
  ``llmcall`` table with the raw reply, tokens, latency and error.  A request whose
  hash is logged with a reply (``ok`` or ``invalid``) is answered from the log, so
  re-running anything makes zero calls and a killed run resumes.  Failed requests
  (``error``) are tried again on the next run.
* Concurrency is bounded by a semaphore; 429 / 5xx / timeouts / connection errors
  are retried with exponential backoff and jitter, honouring ``Retry-After`` up to
  ``RETRY_AFTER_CAP`` (a longer one stops the run's requests at once, saying so), with
  at most ``MAX_TOTAL_WAIT`` of waiting per request; every request has a timeout.
* Replies are scrubbed of the key (a server may echo it) and capped at
  ``MAX_REPLY_CHARS`` (stored truncated, flagged, never a vote) before they are stored.
* Structured output (``response_format`` JSON schema) and ``logprobs`` are asked
  for when the caller wants them; a server that rejects either (HTTP 400/422) is
  asked again without it, and the client remembers that for the rest of the run.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import Store
from ..errors import CondsimError
from ..models import utcnow
from .endpoint import (
    DEFAULT_KEY_ENV,
    ENV_MODEL,
    NO_KEY,
    Endpoint,
    LLMError,
    default_tls,
    endpoint_status,
    redact_url,
    resolve_endpoint,
)
from .tables import LLMCall

MAX_REPLY_CHARS = 100_000  # longer replies are stored truncated (and count as unreadable)
RETRY_AFTER_CAP = 60.0  # seconds: the longest Retry-After waited for; a longer one stops the run's requests
MAX_TOTAL_WAIT = 180.0  # seconds: waiting (backoff + Retry-After) one request may spend before giving up
LONG_WAIT = 10.0  # waits at least this long are announced on the log
log = logging.getLogger("condsim_annot.llm")

__all__ = ["DEFAULT_KEY_ENV", "ENV_MODEL", "NO_KEY", "CallResult", "CallStats", "Endpoint", "LLMClient", "LLMError",
           "complete_with_retries", "endpoint_status", "json_schema_format", "redact_url", "request_hash",
           "resolve_endpoint", "run_sync"]


# --------------------------------------------------------------------------- results


def request_hash(request: dict, attempt: int = 0) -> str:
    """sha256 of the canonical JSON of the logical request plus the attempt number."""
    blob = json.dumps({"request": request, "attempt": attempt}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def estimate_tokens(messages: list[dict]) -> int:
    """Rough prompt size (4 characters a token) for dry runs."""
    return sum(len(m.get("content") or "") // 4 + 4 for m in messages) + 3


@dataclass
class CallResult:
    request_hash: str
    status: str  # ok | invalid | error | dry
    text: str | None = None
    parsed: Any = None
    logprobs: list | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None
    cached: bool = False
    call_id: int | None = None
    error: str | None = None
    truncated: bool = False  # the reply was over MAX_REPLY_CHARS (stored cut; never a vote)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class CallStats:
    requests: int = 0  # logical requests asked for
    cached: int = 0  # answered from the log
    calls: int = 0  # answered by the server in this run
    http_attempts: int = 0
    retries: int = 0
    errors: int = 0  # gave up after retries
    invalid: int = 0  # answered but unreadable
    tokens_in: int = 0  # spent in this run
    tokens_out: int = 0
    cached_tokens_in: int = 0  # what the cached answers had cost
    cached_tokens_out: int = 0
    would_call: int = 0  # dry run: requests not in the log
    est_tokens_in: int = 0
    est_tokens_out: int = 0
    dropped_features: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Parser = Callable[[str | None], tuple[bool, Any]]


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class LLMClient:
    """Use as ``async with LLMClient(store, endpoint) as c: await c.complete(...)``."""

    def __init__(self, store: Store, endpoint: Endpoint, *, dry_run: bool = False, retry_invalid: bool = False):
        self.store = store
        self.endpoint = endpoint
        self.dry_run = dry_run
        self.stats = CallStats()
        # what the server accepts; switched off (for the rest of the run) when it rejects it
        self.features = {"response_format": True, "logprobs": True, "max_tokens": True, "temperature": True}
        # response_format json_schema -> llama-cpp-python's {"type": "json_object", "schema": ...} -> none
        self.schema_as_json_object = False
        self._cache: dict[str, dict] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._missing: set[str] = set()
        self._sem: asyncio.Semaphore | None = None
        self._client = None
        self._last_warning = -1e9
        self._closed_until = 0.0  # monotonic time before which the server asked not to be called
        self.retry_invalid = retry_invalid  # ask again requests whose logged reply was unreadable
        self._reasked: set[str] = set()

    # -- lifecycle
    async def __aenter__(self) -> LLMClient:
        self._sem = asyncio.Semaphore(self.endpoint.concurrency)
        if not self.dry_run:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            self._client = AsyncOpenAI(
                api_key=self.endpoint.api_key or NO_KEY,
                base_url=self.endpoint.base_url,
                timeout=self.endpoint.timeout,
                max_retries=0,  # we retry ourselves (backoff with jitter, Retry-After, logged)
                http_client=DefaultAsyncHttpxClient(verify=default_tls()),
            )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def scrub(self, text: str | None) -> str | None:
        secrets = [self.endpoint.api_key]
        if self.endpoint.base_url:
            u = urlparse(self.endpoint.base_url)
            secrets += [u.password, self.endpoint.base_url]
        for secret in secrets:
            if text and secret and len(secret) >= 4:
                text = text.replace(secret, "***" if secret != self.endpoint.base_url else self.endpoint.safe_base_url)
        return text

    # -- cache
    @staticmethod
    def _row_entry(r: LLMCall) -> dict:
        lp = None
        try:
            lp = (((r.response or {}).get("choices") or [{}])[0].get("logprobs") or {}).get("content")
        except (AttributeError, IndexError, TypeError):
            lp = None
        return {"id": r.id, "status": r.status, "text": r.response_text, "logprobs": lp,
                "truncated": bool((r.meta or {}).get("truncated_from")),
                "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "latency_ms": r.latency_ms}

    def prefetch(self, hashes: list[str]) -> int:
        """Load logged answers for these hashes (one query per 500); returns how many were found."""
        todo = [h for h in set(hashes) if h not in self._cache]
        found = 0
        with self.store.session() as s:
            for i in range(0, len(todo), 500):
                rows = s.scalars(select(LLMCall).where(LLMCall.request_hash.in_(todo[i : i + 500]),
                                                       LLMCall.status != "error")).all()
                for r in rows:
                    self._cache[r.request_hash] = self._row_entry(r)
                    found += 1
        self._missing.update(h for h in todo if h not in self._cache)
        return found

    def _lookup(self, h: str) -> dict | None:
        if h in self._cache:
            return self._cache[h]
        if h in self._missing:  # looked up moments ago by prefetch (another process may race us: harmless)
            self._missing.discard(h)
            return None
        with self.store.session() as s:
            r = s.scalars(select(LLMCall).where(LLMCall.request_hash == h, LLMCall.status != "error")).first()
            if r is not None:
                self._cache[h] = self._row_entry(r)
        return self._cache.get(h)

    def _save(self, h: str, fields: dict) -> int:
        for _ in range(3):
            try:
                with self.store.transaction() as s:
                    row = s.scalars(select(LLMCall).where(LLMCall.request_hash == h)).first()
                    if row is None:
                        row = LLMCall(request_hash=h, **fields)
                    else:
                        for k, v in fields.items():
                            setattr(row, k, v)
                        row.updated_at = utcnow()
                    s.add(row)
                    s.flush()
                    return row.id
            except IntegrityError:  # another process logged the same request just now
                continue
        raise CondsimError(f"could not log LLM call {h[:12]}")

    # -- the call
    def _wire_request(self, request: dict) -> dict:
        req = dict(request)
        if not self.features["response_format"]:
            req.pop("response_format", None)
        elif self.schema_as_json_object and (req.get("response_format") or {}).get("type") == "json_schema":
            schema = (req["response_format"].get("json_schema") or {}).get("schema")
            req["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
        if not self.features["logprobs"]:
            req.pop("logprobs", None)
            req.pop("top_logprobs", None)
        if not self.features["max_tokens"] and "max_tokens" in req:  # reasoning models want the new name
            req["max_completion_tokens"] = req.pop("max_tokens")
        if not self.features["temperature"]:  # ... and only their default temperature
            req.pop("temperature", None)
        return req

    def _drop_feature(self, req: dict, message: str, *, named_only: bool = False) -> bool:
        """Switch off (or step down) a feature the server's error names; True if something changed."""
        msg = message.lower()
        order = []
        if "max_tokens" in msg:
            order.append("max_tokens")
        if "temperature" in msg:
            order.append("temperature")
        if "logprob" in msg:
            order.append("logprobs")
        if "response_format" in msg or "json_schema" in msg or "response format" in msg:
            order.append("response_format")
        if not named_only and any(w in msg for w in ("unsupported", "not supported", "unrecognized",
                                                     "unknown parameter", "extra inputs", "not allowed")):
            order += ["response_format", "logprobs"]
        for feat in order:
            if (feat == "response_format" and feat in req and not self.schema_as_json_object
                    and req[feat].get("type") == "json_schema"):
                self.schema_as_json_object = True  # llama-cpp-python knows only json_object (+ schema)
                self.stats.dropped_features.append("json_schema")
                return True
            if feat in req and self.features[feat]:
                self.features[feat] = False
                self.stats.dropped_features.append(feat)
                return True
        return False

    async def _send(self, request: dict) -> tuple[Any, int, float, dict]:
        """(completion, http attempts, latency ms, request as sent); raises on final failure."""
        import openai

        ep = self.endpoint
        tries = failures = 0
        waited = 0.0
        while True:
            req = self._wire_request(request)
            tries += 1
            self.stats.http_attempts += 1
            try:
                assert self._sem is not None and self._client is not None
                async with self._sem:
                    if self._closed_until > time.monotonic():
                        left = self._closed_until - time.monotonic()
                        raise _GaveUp(f"not sent: the server asked to wait {left:.0f} s more (Retry-After); "
                                      "run the command again later", tries - 1)
                    req = self._wire_request(request)  # features may have been dropped while we waited
                    t0 = time.perf_counter()
                    resp = await self._client.chat.completions.create(**req)
                    latency = (time.perf_counter() - t0) * 1000.0
                if isinstance(resp, str) or not getattr(resp, "choices", None):
                    raise _Malformed(f"the server's reply is not a chat completion: {str(resp)[:200]!r}")
                return resp, tries, latency, req
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code in (400, 422) or code >= 500:  # llama-cpp-python answers 500 to parameters it rejects
                    if req != self._wire_request(request) or self._drop_feature(req, str(exc), named_only=code >= 500):
                        continue  # ask again without the feature the server rejected
                if code in (401, 403):
                    raise LLMError(f"the server refused the key (HTTP {code}): {self.scrub(str(exc))[:300]}; "
                                   "check $OPENAI_API_KEY or --api-key-env") from None
                if code == 404:
                    raise LLMError(f"HTTP 404 from {ep.safe_base_url}: {self.scrub(str(exc))[:300]} (is the model "
                                   f"name {ep.model!r} and the base URL right? it usually ends in /v1)") from None
                if not (code in (408, 409, 429) or code >= 500):
                    raise _Permanent(f"HTTP {code}: {self.scrub(str(exc))[:500]}") from None
                last = exc
            except (openai.APITimeoutError, openai.APIConnectionError, _Malformed, openai.APIResponseValidationError,
                    ValueError) as exc:  # ValueError: a body that is not JSON (json.JSONDecodeError)
                last = exc
            failures += 1
            if failures > ep.max_retries:
                raise _GaveUp(f"gave up after {tries} tries: {type(last).__name__}: {self.scrub(str(last))[:500]}",
                              tries)
            self.stats.retries += 1
            delay = self._delay(last, failures, waited, tries)
            waited += delay
            await asyncio.sleep(delay)

    def _delay(self, last: Exception, failures: int, waited: float, tries: int) -> float:
        """The wait before the next try: Retry-After or backoff with jitter, each capped, bounded in total.

        A Retry-After over RETRY_AFTER_CAP (a spent quota) stops this request and every later one of the
        run at once, with a message saying so, instead of stalling silently."""
        ep = self.endpoint
        ra = _retry_after(last)
        if ra is not None and ra > RETRY_AFTER_CAP:
            self._closed_until = max(self._closed_until, time.monotonic() + ra)
            raise _GaveUp(f"the server asked to wait {ra:.0f} s (Retry-After), more than the {RETRY_AFTER_CAP:.0f} s "
                          "this tool waits: gave up; run the command again later", tries)
        if ra is not None:
            delay = ra + random.uniform(0, 0.05 + 0.1 * ra)
            asked = f"the server asked to wait {ra:.0f} s (Retry-After)"
        else:
            d = min(ep.backoff_cap, ep.backoff_base * (2 ** (failures - 1)))
            delay = random.uniform(d / 2, d)
            asked = f"backing off after {type(last).__name__}"
        if waited + delay > MAX_TOTAL_WAIT:
            raise _GaveUp(f"gave up after {tries} tries and {waited:.0f} s of waiting ({asked}): one request waits "
                          f"at most {MAX_TOTAL_WAIT:.0f} s", tries)
        if delay >= LONG_WAIT and time.monotonic() - self._last_warning > LONG_WAIT:
            self._last_warning = time.monotonic()
            log.warning("%s from %s: waiting %.0f s", asked, ep.safe_base_url, delay)
        return delay

    async def complete(
        self,
        request: dict,
        *,
        task: str,
        parse: Parser,
        prompt_version: str | None = None,
        attempt: int = 0,
        annotator_id: int | None = None,
        criterion_id: int | None = None,
        meta: dict | None = None,
        expect_tokens_out: int = 10,
    ) -> CallResult:
        """One logical request: from the log if answered before, else from the server (and logged).

        ``request`` holds ``model``, ``messages`` and sampling parameters (it may ask for
        ``response_format`` / ``logprobs``).  ``parse(text) -> (ok, parsed)`` decides
        ``ok`` vs ``invalid``; the raw text is always kept.  Never raises for one bad
        request (status ``error``); raises :class:`LLMError` for problems every request has.
        """
        h = request_hash(request, attempt)
        self.stats.requests += 1
        hit = self._lookup(h)
        if hit is not None and self.retry_invalid and h not in self._reasked and not self.dry_run:
            ok, _ = parse(hit["text"])
            if not ok or hit.get("truncated"):  # unreadable last time: ask the (fixed) server again, once a run
                self._reasked.add(h)
                self._cache.pop(h, None)
                hit = None
        if hit is not None:
            ok, parsed = parse(hit["text"])  # parse again: parsing may have improved since
            ok = ok and not hit.get("truncated")
            self.stats.cached += 1
            self.stats.cached_tokens_in += hit["tokens_in"] or 0
            self.stats.cached_tokens_out += hit["tokens_out"] or 0
            return CallResult(h, "ok" if ok else "invalid", hit["text"], parsed, hit["logprobs"], hit["tokens_in"],
                              hit["tokens_out"], hit["latency_ms"], cached=True, call_id=hit["id"])
        if h in self._inflight:  # the same request is on its way: share its answer
            res = await asyncio.shield(self._inflight[h])
            self.stats.cached += 1
            ok, parsed = parse(res.text) if res.status in ("ok", "invalid") else (False, None)
            ok = ok and not res.truncated
            status = res.status if res.status not in ("ok", "invalid") else ("ok" if ok else "invalid")
            return CallResult(h, status, res.text, parsed, res.logprobs, res.tokens_in, res.tokens_out, res.latency_ms,
                              cached=True, call_id=res.call_id, error=res.error)
        if self.dry_run:
            self.stats.would_call += 1
            self.stats.est_tokens_in += estimate_tokens(request.get("messages", []))
            self.stats.est_tokens_out += expect_tokens_out
            return CallResult(h, "dry")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[h] = fut
        try:
            res = await self._call(h, request, task=task, parse=parse, prompt_version=prompt_version,
                                   annotator_id=annotator_id, criterion_id=criterion_id, meta=meta)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody shares it
            raise
        else:
            fut.set_result(res)
        finally:
            self._inflight.pop(h, None)
        return res

    async def _call(self, h: str, request: dict, *, task: str, parse: Parser, prompt_version, annotator_id,
                    criterion_id, meta) -> CallResult:
        base = {"task": task, "model": self.endpoint.model,
                "base_url": self.endpoint.base_url and redact_url(self.endpoint.base_url),
                "prompt_version": prompt_version, "annotator_id": annotator_id, "criterion_id": criterion_id,
                "meta": meta}
        t_start = time.perf_counter()
        try:
            resp, tries, latency, sent = await self._send(request)
        except (_GaveUp, _Permanent) as exc:
            self.stats.errors += 1
            msg = str(exc)
            call_id = self._save(h, {**base, "request": self._wire_request(request), "status": "error", "error": msg,
                                     "tries": getattr(exc, "tries", 1),
                                     "latency_ms": (time.perf_counter() - t_start) * 1000.0,
                                     "response_text": None, "response": None, "parsed": None})
            return CallResult(h, "error", error=msg, call_id=call_id)
        data, text, logprobs, cut = self._safe_reply(resp)
        usage = data.get("usage") or {}
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        ok, parsed = parse(text)
        ok = ok and cut is None  # an oversized reply is never a vote
        status = "ok" if ok else "invalid"
        why = parsed.get("error") if isinstance(parsed, dict) else None
        error = None if ok else (f"reply of {cut:,} characters is over the cap of {MAX_REPLY_CHARS:,}; stored truncated"
                                 if cut is not None else "unparseable reply" + (f": {why}" if why else ""))
        self.stats.calls += 1
        self.stats.tokens_in += tin or 0
        self.stats.tokens_out += tout or 0
        if not ok:
            self.stats.invalid += 1
        meta = {**(meta or {}), "truncated_from": cut} if cut is not None else meta
        call_id = self._save(h, {**base, "meta": meta, "request": sent, "status": status, "error": error,
                                 "response_text": text, "response": data,
                                 "parsed": parsed if isinstance(parsed, dict) else {"value": parsed},
                                 "tokens_in": tin, "tokens_out": tout, "latency_ms": latency, "tries": tries})
        self._cache[h] = {"id": call_id, "status": status, "text": text, "logprobs": logprobs,
                          "truncated": cut is not None,
                          "tokens_in": tin, "tokens_out": tout, "latency_ms": latency}
        return CallResult(h, status, text, parsed, logprobs, tin, tout, latency, cached=False, call_id=call_id,
                          error=error,
                          truncated=cut is not None)

    def _safe_reply(self, resp: Any) -> tuple[dict, str | None, list | None, int | None]:
        """(response JSON, text, logprobs, original length if truncated) with secrets scrubbed and size capped.

        A server may echo the key back in a 200 reply: it is scrubbed before anything is parsed or stored."""
        data = _finite(resp.model_dump(mode="json", exclude_none=True))
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None:
            text = message.get("refusal")
        logprobs = (choice.get("logprobs") or {}).get("content")
        joined = "".join(str(t.get("token", "")) for t in logprobs or [] if isinstance(t, dict))
        if joined and self.scrub(joined) != joined:
            logprobs = None  # the secret is spread over tokens: drop them rather than store it
            choice.pop("logprobs", None)
        cut = len(text) if text is not None and len(text) > MAX_REPLY_CHARS else None
        if cut is not None:
            text = text[:MAX_REPLY_CHARS]
            logprobs = None
            choice.pop("logprobs", None)
            for k in ("content", "refusal"):
                if isinstance(message.get(k), str):
                    message[k] = message[k][:MAX_REPLY_CHARS]
        return self._scrub_json(data), self.scrub(text), logprobs, cut

    def _scrub_json(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {k: self._scrub_json(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._scrub_json(v) for v in obj]
        return obj


def _finite(obj: Any) -> Any:
    """Replace NaN/±inf (e.g. -inf logprobs of masked tokens) by None: PostgreSQL's JSON refuses them."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


class _Malformed(Exception):
    pass


class _Permanent(Exception):
    tries = 1


class _GaveUp(Exception):
    def __init__(self, msg: str, tries: int):
        super().__init__(msg)
        self.tries = tries


# --------------------------------------------------------------------------- helpers for stages


async def complete_with_retries(
    client: LLMClient,
    request: dict,
    *,
    retry_message: str | None,
    invalid_retries: int,
    **kw: Any,
) -> tuple[CallResult, int]:
    """Ask; while the reply is unreadable, ask again (up to ``invalid_retries`` times) with the bad
    reply and ``retry_message`` appended.  Each attempt is its own logged request.
    Returns (last result, attempts made)."""
    res = await client.complete(request, attempt=0, **kw)
    n = 1
    while res.status == "invalid" and n <= invalid_retries and retry_message:
        req = dict(request)
        req["messages"] = list(request["messages"]) + [
            {"role": "assistant", "content": (res.text or "")[:2000]},
            {"role": "user", "content": retry_message},
        ]
        res = await client.complete(req, attempt=n, **kw)
        n += 1
    return res, n


def run_sync(coro):
    """Run a coroutine from sync code, also when an event loop is already running (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def json_schema_format(name: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": name,
            "strict": True,
            "schema": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
        },
    }
