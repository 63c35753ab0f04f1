"""The LM stage's table: one row per distinct request sent to a chat-completions API.

``llmcall`` is both the audit log and the cache.  A request is identified by
``request_hash`` (sha256 of the model, the messages, the sampling parameters and
an attempt number; *not* of the server URL or the key), so an identical request
is answered from this table: re-running a judge or a transform makes no new calls
and a run killed halfway resumes where it stopped.  The API key is never stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Text
from sqlmodel import Field, SQLModel

from ..models import utcnow

CALL_STATUSES = ("ok", "invalid", "error")


class LLMCall(SQLModel, table=True):
    __tablename__ = "llmcall"

    id: int | None = Field(default=None, primary_key=True)
    request_hash: str = Field(max_length=64, unique=True, index=True)
    task: str = Field(max_length=40, index=True, description="judge | in-one-word | rewrite | ...")
    model: str = Field(max_length=300, index=True)
    base_url: str | None = Field(default=None, max_length=500, description="server, without credentials")
    prompt_version: str | None = Field(default=None, max_length=100)
    annotator_id: int | None = Field(default=None, foreign_key="annotator.id", index=True)
    criterion_id: int | None = Field(default=None, foreign_key="criterion.id", index=True)
    request: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    response_text: str | None = Field(default=None, sa_type=Text)
    response: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    parsed: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: str = Field(default="ok", max_length=10, index=True, description="ok | invalid | error")
    error: str | None = Field(default=None, sa_type=Text)
    tokens_in: int | None = Field(default=None)
    tokens_out: int | None = Field(default=None)
    latency_ms: float | None = Field(default=None)
    tries: int = Field(default=1, description="HTTP attempts (retries on 429/5xx/timeouts)")
    meta: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
