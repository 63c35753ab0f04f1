"""Where and how to call an OpenAI-compatible server: model, base URL, key (never stored), limits."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlunparse

from ..errors import CondsimError

ENV_MODEL = "CONDSIM_LLM_MODEL"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "sk-no-key-needed"  # the SDK insists on some key; local servers ignore it


class LLMError(CondsimError):
    """A problem every request would hit (bad key, unknown model, unreachable config)."""


def redact_url(url: str | None) -> str | None:
    """The URL without user:password (a key in the URL must not reach the store)."""
    if not url:
        return url
    u = urlparse(url)
    if u.username or u.password:
        host = u.hostname or ""
        if u.port:
            host += f":{u.port}"
        u = u._replace(netloc=host)
    return urlunparse(u)


@dataclass
class Endpoint:
    """Where and how to call.  ``api_key`` is excluded from repr and never stored."""

    model: str
    base_url: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    max_retries: int = 5
    concurrency: int = 8
    backoff_base: float = 1.0
    backoff_cap: float = 60.0

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"Endpoint(model={self.model!r}, base_url={self.safe_base_url!r}, key={key})"

    @property
    def safe_base_url(self) -> str:
        return redact_url(self.base_url) or "https://api.openai.com/v1"


def endpoint_status(base_url: str | None = None, api_key_env: str | None = None) -> tuple[bool, str]:
    """Whether an LLM endpoint is configured (flags or environment), and a sentence saying why (not).

    Proposers use this to skip LLM methods with a clear message::

        ok, why = endpoint_status(base_url)
        if not ok: console.print(f"skipping lm-judge: {why}")
    """
    env = api_key_env or DEFAULT_KEY_ENV
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    if url:
        return True, f"using the server at {redact_url(url)}"
    if os.environ.get(env):
        return True, f"using the OpenAI API with the key in ${env}"
    return False, (
        f"no LLM endpoint configured: set ${env} for the OpenAI API, or point --base-url / $OPENAI_BASE_URL "
        "at an OpenAI-compatible server (vLLM, Ollama, llama.cpp)"
    )


def resolve_endpoint(
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    *,
    require_key: bool = True,
    **kw: Any,
) -> Endpoint:
    """Build an :class:`Endpoint` from arguments and the environment; clear errors when incomplete.

    ``kw``: timeout, max_retries, concurrency, backoff_base, backoff_cap.
    """
    model = model or os.environ.get(ENV_MODEL)
    if not model:
        raise LLMError(f"no model given: pass --model (e.g. gpt-4.1-mini) or set ${ENV_MODEL}")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    env = api_key_env or DEFAULT_KEY_ENV
    key = os.environ.get(env) or None
    if api_key_env and not key and require_key and not base_url:
        raise LLMError(f"the environment variable ${api_key_env} (from --api-key-env) is not set")
    if not key and not base_url and require_key:
        raise LLMError(endpoint_status(None, env)[1])
    if kw.get("concurrency") is not None and kw["concurrency"] < 1:
        raise LLMError("--concurrency must be at least 1")
    if kw.get("timeout") is not None and not kw["timeout"] > 0:
        raise LLMError(f"--timeout must be a positive number of seconds, not {kw['timeout']}")
    return Endpoint(model=model, base_url=base_url, api_key=key, **{k: v for k, v in kw.items() if v is not None})


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str | None, capath: str | None) -> Any:
    """httpx's default TLS context (certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR, the cache's key), made once:
    every new client otherwise loads the CA bundle again (~0.1 s of CPU per command run in one process)."""
    import httpx

    return httpx.create_ssl_context()


def default_tls() -> Any:
    """The TLS context a new HTTP client of this process gets (see :func:`_tls_context`)."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
