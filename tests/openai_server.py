"""A small OpenAI-compatible HTTP server for tests (and bench/judge.py): real HTTP on 127.0.0.1.

The test controls the answers with a *rule*: ``rule(request_json, n) -> Reply | str | dict``
(``n`` counts requests from 1).  A ``str`` is the assistant's message content; a
``dict`` is sent as the JSON body.  ``Reply`` can also set an HTTP status,
headers (``Retry-After``), a delay (slow answers), a raw body (malformed JSON) and
logprobs.  The server counts calls and keeps every request body and header set.

    with OpenAIServer(lambda req, n: '{"answer": "A"}') as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x")
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = None  # the assistant message
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    body: bytes | None = None  # raw body (overrides everything else)
    json_body: dict | None = None
    logprobs: list[dict] | None = None  # choices[0].logprobs.content
    prompt_tokens: int = 50
    completion_tokens: int = 5


def completion(
    content: str,
    *,
    model: str = "test-model",
    logprobs: list[dict] | None = None,
    prompt_tokens: int = 50,
    completion_tokens: int = 5,
) -> dict:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def label_logprobs(content: str, label: str, p: float, other: str = "B") -> list[dict]:
    """Token logprobs for a JSON answer like {"answer": "A"}: the label token has probability p."""
    before, _, after = content.partition(label)
    toks = []
    if before:
        toks.append({"token": before, "logprob": 0.0, "top_logprobs": []})
    toks.append(
        {
            "token": label,
            "logprob": math.log(p),
            "top_logprobs": [
                {"token": label, "logprob": math.log(p)},
                {"token": other, "logprob": math.log(max(1e-9, 1 - p))},
            ],
        }
    )
    if after:
        toks.append({"token": after, "logprob": 0.0, "top_logprobs": []})
    return toks


_DOC = re.compile(r'<document role="([^"]+)">\n(.*?)\n</document>', re.DOTALL)


def documents(request: dict) -> dict[str, str]:
    """{role: text} of the <document> blocks in the last user message (anchor, A, B / document)."""
    user = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return dict(_DOC.findall(user[0]["content"])) if user else {}


Rule = Callable[[dict, int], Reply | str | dict]


class OpenAIServer:
    def __init__(self, rule: Rule | None = None, *, latency: float = 0.0):
        self.rule: Rule = rule or (lambda req, n: '{"answer": "A"}')
        self.latency = latency
        self.calls = 0
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.requests.clear()
            self.headers.clear()
            self.times.clear()
            self.max_in_flight = 0

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(
                        200,
                        json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode(),
                        {},
                    )
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', {})

            def do_POST(self):
                n_bytes = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n_bytes)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode(), {})
                    return
                try:
                    req = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "bad json"}}', {})
                    return
                with server._lock:
                    server.calls += 1
                    n = server.calls
                    server.requests.append(req)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.times.append(time.monotonic())
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    try:
                        r = server.rule(req, n)
                    except Exception as exc:  # a broken rule is a 500 the test will see
                        r = Reply(status=500, json_body={"error": {"message": f"rule failed: {exc!r}"}})
                    if isinstance(r, str):
                        r = Reply(content=r)
                    elif isinstance(r, dict):
                        r = Reply(json_body=r)
                    if server.latency or r.delay:
                        time.sleep(server.latency + r.delay)
                    if r.body is not None:
                        body = r.body
                    elif r.json_body is not None:
                        body = json.dumps(r.json_body).encode()
                    elif r.status != 200:
                        body = json.dumps({"error": {"message": f"test error {r.status}", "type": "test"}}).encode()
                    else:
                        body = json.dumps(
                            completion(
                                r.content or "",
                                model=req.get("model", "test-model"),
                                logprobs=r.logprobs,
                                prompt_tokens=r.prompt_tokens,
                                completion_tokens=r.completion_tokens,
                            )
                        ).encode()
                    try:
                        self._send(r.status, body, dict(r.headers))
                    except (BrokenPipeError, ConnectionResetError):  # client timed out and left
                        pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- store seeding for LLM tests


def seed_corpus(
    store,
    texts: list[str],
    *,
    criterion: str = "same-technique",
    description: str = "Solved with the same key technique, regardless of topic",
) -> tuple[int, list[int]]:
    """A corpus of ``texts`` and one criterion; returns (criterion id, document ids in order)."""
    import hashlib

    from condsim_annot.criteria import add_criterion
    from condsim_annot.models import Corpus, Document

    with store.transaction() as s:
        c = Corpus(name="llm-test")
        s.add(c)
        s.flush()
        docs = [
            Document(corpus_id=c.id, ext_id=f"d{i}", text=t, content_hash=hashlib.sha256(t.encode()).hexdigest())
            for i, t in enumerate(texts)
        ]
        s.add_all(docs)
        s.flush()
        ids = [d.id for d in docs]
    crit = add_criterion(store, criterion, description)
    return crit.id, ids


def seed_triplets(store, criterion_id: int, triples: list[tuple[int, int, int]]) -> list[int]:
    """Add (anchor, x, y) triplets; returns their ids."""
    from condsim_annot.store_api import add_triplet

    with store.transaction() as s:
        return [add_triplet(s, criterion_id, a, x, y)[0].id for a, x, y in triples]
