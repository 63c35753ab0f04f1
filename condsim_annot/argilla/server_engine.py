"""A search engine for argilla-server that reads the server's own SQL tables.

Runs inside the argilla-server virtual environment (imported by ``server_entry.py``);
it must not import ``condsim_annot``.  It replaces Elasticsearch/OpenSearch for a
local, one-machine server: records are filtered and sorted in Python, which is fast
enough for the tens of thousands of records a review dataset holds.

Only reads need real code (``search``, progress, metadata metrics); the write hooks
are no-ops because the SQL tables *are* the index.  Filters, sorting and the text
query follow ``argilla_server/search_engine/commons.py`` (Elasticsearch semantics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import MetadataPropertyType, SortOrder
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Question,
    Record,
    Response,
    Suggestion,
    User,
    VectorSettings,
)
from argilla_server.search_engine.base import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import func, select

ENGINE_NAME = "condsim-sql"


def _v(x: Any) -> Any:
    """Enum -> its value; anything else unchanged."""
    return getattr(x, "value", x)


@dataclasses.dataclass
class _Doc:
    id: Any
    external_id: str | None
    status: str
    fields: dict
    metadata: dict
    inserted_at: datetime | None
    updated_at: datetime | None
    responses: list = dataclasses.field(default_factory=list)  # dicts: id, status, user_id, values
    suggestions: dict = dataclasses.field(default_factory=dict)  # question name -> dict

    def prop(self, name: str) -> Any:
        if name in ("id", "external_id", "status", "inserted_at", "updated_at"):
            return getattr(self, name)
        return None


# --------------------------------------------------------------------------- text query (simple_query_string subset)

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # chat fields: [{role, content}]
        return " ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    if isinstance(value, dict):
        return " ".join(_field_text(v) for v in value.values())
    return str(value)


_TOKEN = re.compile(r'([+-]?)"([^"]*)"|([+-]?)(\S+)')


def _count_term(words: list[str], term: str) -> int:
    """Occurrences of a term (a phrase when it has several words; ``foo*`` = prefix)."""
    prefix = term.endswith("*")
    tw = _words(term)
    if not tw:
        return 0
    n = len(tw)
    hits = 0
    for i in range(len(words) - n + 1):
        ok = True
        for j, t in enumerate(tw):
            w = words[i + j]
            if prefix and j == n - 1:
                if not w.startswith(t):
                    ok = False
                    break
            elif w != t:
                ok = False
                break
        if ok:
            hits += 1
    return hits


def text_score(query: str, text: str) -> float:
    """0 when the text does not match; AND of terms, ``-term`` excludes, ``a | b`` is OR."""
    words = _words(text)
    best = 0.0
    for group in re.split(r"\s+\|\s+", query.strip()):
        score, ok = 0.0, True
        for m in _TOKEN.finditer(group):
            neg = (m.group(1) or m.group(3)) == "-"
            term = m.group(2) if m.group(2) is not None else m.group(4)
            if term in ("|", "+", "-", ""):
                continue
            c = _count_term(words, term)
            if neg:
                if c:
                    ok = False
                    break
            elif not c:
                ok = False
                break
            else:
                score += 1.0 + c / (1.0 + len(words)) ** 0.5
        if ok and score > best:
            best = score
    return best


# --------------------------------------------------------------------------- filters


def _matches_terms(value: Any, values: Iterable[Any]) -> bool:
    wanted = {str(_v(x)) for x in values}
    if value is None:
        return False
    if isinstance(value, list):
        return any(str(_v(x)) in wanted for x in value)
    if isinstance(value, bool):
        return str(value).lower() in {w.lower() for w in wanted}
    return str(_v(value)) in wanted


def _num(x: Any) -> float | None:
    if isinstance(x, datetime):
        return x.timestamp()
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _matches_range(value: Any, ge: float | None, le: float | None) -> bool:
    vals = value if isinstance(value, list) else [value]
    for v in vals:
        n = _num(v)
        if n is None:
            continue
        if ge is not None and n < ge:
            continue
        if le is not None and n > le:
            continue
        return True
    return False


def _match_value(f, value: Any) -> bool:
    if isinstance(f, TermsFilter):
        return _matches_terms(value, f.values)
    if isinstance(f, RangeFilter):
        return _matches_range(value, f.ge, f.le)
    raise ValueError(f"Cannot process filter {f}")


def _user_responses(doc: _Doc, user: User | None) -> list:
    if user is None:
        return doc.responses
    return [r for r in doc.responses if str(r["user_id"]) == str(user.id)]


def matches(f, doc: _Doc) -> bool:
    if isinstance(f, AndFilter):
        return all(matches(x, doc) for x in f.filters)
    scope = f.scope
    if isinstance(scope, ResponseFilterScope):
        rs = _user_responses(doc, scope.user)
        if scope.question:
            return any(_match_value(f, (r["values"] or {}).get(scope.question, {}).get("value")) for r in rs)
        if scope.property == "status" and isinstance(f, TermsFilter):
            values = [str(_v(x)) for x in f.values]
            if "pending" in values and not rs:
                return True
            others = [x for x in values if x != "pending"]
            return any(str(_v(r["status"])) in others for r in rs)
        raise ValueError(f"Cannot process filter scope {scope}")
    if isinstance(scope, MetadataFilterScope):
        return _match_value(f, doc.metadata.get(scope.metadata_property))
    if isinstance(scope, SuggestionFilterScope):
        s = doc.suggestions.get(scope.question)
        return s is not None and _match_value(f, s.get(scope.property))
    if isinstance(scope, RecordFilterScope):
        return _match_value(f, doc.prop(scope.property))
    raise ValueError(f"Cannot process request for search scope {scope}")


def _sort_value(order: Order, doc: _Doc) -> Any:
    scope = order.scope
    if isinstance(scope, MetadataFilterScope):
        return doc.metadata.get(scope.metadata_property)
    if isinstance(scope, RecordFilterScope):
        return doc.prop(scope.property)
    if isinstance(scope, SuggestionFilterScope):
        return (doc.suggestions.get(scope.question) or {}).get(scope.property)
    if isinstance(scope, ResponseFilterScope):
        rs = _user_responses(doc, scope.user)
        if scope.question:
            nums = [_num((r["values"] or {}).get(scope.question, {}).get("value")) for r in rs]
        else:
            nums = [r.get(scope.property) for r in rs]
        nums = [n for n in nums if n is not None]
        if not nums:
            return None
        if all(isinstance(n, (int, float)) for n in nums):
            return sum(nums) / len(nums)
        return min(map(str, nums))
    raise ValueError(f"Cannot sort by scope {scope}")


def sort_docs(docs: list[_Doc], sort: list[Order]) -> list[_Doc]:
    """Stable multi-key sort; missing values last (as in Elasticsearch)."""
    out = list(docs)
    for order in reversed(sort):
        desc = str(_v(order.order)) == SortOrder.desc.value
        present = [d for d in out if _sort_value(order, d) is not None]
        missing = [d for d in out if _sort_value(order, d) is None]

        def key(d, order=order):
            v = _sort_value(order, d)
            n = _num(v) if not isinstance(v, str) else None
            return (0, n, "") if n is not None else (1, 0.0, str(v))

        present.sort(key=key, reverse=desc)
        out = present + missing
    return out


# --------------------------------------------------------------------------- engine


@SearchEngine.register(ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    """Reads records, responses and suggestions straight from the server's database."""

    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self):
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"engine": ENGINE_NAME, "version": "1"}

    # write hooks: the SQL tables are the index
    async def create_index(self, dataset: Dataset):
        pass

    async def delete_index(self, dataset: Dataset):
        pass

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty):
        pass

    async def configure_index_vectors(self, vector_settings: VectorSettings):
        pass

    async def index_records(self, dataset: Dataset, records: Iterable[Record]):
        pass

    async def partial_record_update(self, record: Record, **update):
        pass

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]):
        pass

    async def update_record_response(self, response: Response):
        pass

    async def delete_record_response(self, response: Response):
        pass

    async def update_record_suggestion(self, suggestion: Suggestion):
        pass

    async def delete_record_suggestion(self, suggestion: Suggestion):
        pass

    # reads
    async def _load(self, dataset_id, *, responses: bool = True, suggestions: bool = True) -> list[_Doc]:
        async with AsyncSessionLocal() as db:
            rows = (
                await db.execute(
                    select(
                        Record.id, Record.external_id, Record.status, Record.fields, Record.metadata_,
                        Record.inserted_at, Record.updated_at,
                    ).where(Record.dataset_id == dataset_id)
                )
            ).all()
            docs: dict[Any, _Doc] = {
                r[0]: _Doc(r[0], r[1], str(_v(r[2])), r[3] or {}, r[4] or {}, r[5], r[6]) for r in rows
            }
            if responses and docs:
                for rid, rec_id, uid, st, vals in (
                    await db.execute(
                        select(Response.id, Response.record_id, Response.user_id, Response.status, Response.values)
                        .join(Record, Record.id == Response.record_id)
                        .where(Record.dataset_id == dataset_id)
                    )
                ).all():
                    d = docs.get(rec_id)
                    if d is not None:
                        d.responses.append({"id": rid, "status": str(_v(st)), "user_id": uid, "values": vals or {}})
            if suggestions and docs:
                for rec_id, qname, value, score, agent, typ in (
                    await db.execute(
                        select(
                            Suggestion.record_id, Question.name, Suggestion.value, Suggestion.score,
                            Suggestion.agent, Suggestion.type,
                        )
                        .join(Question, Question.id == Suggestion.question_id)
                        .where(Question.dataset_id == dataset_id)
                    )
                ).all():
                    d = docs.get(rec_id)
                    if d is not None:
                        d.suggestions[qname] = {"value": value, "score": score, "agent": agent, "type": _v(typ)}
        return list(docs.values())

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter=None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: str | None = None,
    ) -> SearchResponses:
        docs = await self._load(dataset.id)
        if filter is not None:
            docs = [d for d in docs if matches(filter, d)]
        scores: dict[Any, float] = {}
        if query is not None:
            if isinstance(query, str):
                query = TextQuery(q=query)
            for d in docs:
                if query.field:
                    text = _field_text(d.fields.get(query.field))
                else:
                    text = " ".join(_field_text(v) for v in d.fields.values())
                scores[d.id] = text_score(query.q, text)
            docs = [d for d in docs if scores[d.id] > 0]
        # default order: insertion; a text query ranks by score; a user gets a stable
        # per-user shuffle (Elasticsearch's random_score seeded by the user id)
        docs.sort(key=lambda d: (d.inserted_at or datetime.min, str(d.id)))
        if user_id is not None:
            docs.sort(key=lambda d: hashlib.sha1(f"{user_id}:{d.id}".encode()).hexdigest())
        if query is not None:
            docs.sort(key=lambda d: -scores[d.id])
        if sort:
            docs = sort_docs(docs, sort)
        page = docs[offset : offset + limit]
        return SearchResponses(
            items=[SearchResponseItem(record_id=d.id, score=scores.get(d.id, 1.0)) for d in page], total=len(docs)
        )

    async def similarity_search(self, dataset: Dataset, vector_settings: VectorSettings, value=None, record=None,
                                query=None, filter=None, max_results: int = 100, order=None,
                                threshold=None) -> SearchResponses:
        # Vector search needs a vector index; the local server does not offer it.
        return SearchResponses(items=[], total=0)

    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        async with AsyncSessionLocal() as db:
            rows = (
                await db.execute(
                    select(Record.status,
                           func.count(Record.id)).where(Record.dataset_id == dataset.id).group_by(Record.status)
                )
            ).all()
        counts = {str(_v(s)): int(n) for s, n in rows}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        if dataset.is_draft:
            return {}
        async with AsyncSessionLocal() as db:
            rows = (
                await db.execute(
                    select(Response.status, func.count(Response.id))
                    .join(Record, Record.id == Response.record_id)
                    .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
                    .group_by(Response.status)
                )
            ).all()
        counts = {str(_v(s)): int(n) for s, n in rows}
        return {"total": sum(counts.values()), **counts}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        name = metadata_property.name
        async with AsyncSessionLocal() as db:
            rows = (
                await db.execute(select(Record.metadata_).where(Record.dataset_id == metadata_property.dataset_id))
            ).all()
        values: list = []
        for (meta,) in rows:
            v = (meta or {}).get(name)
            if v is None:
                continue
            values.extend(v if isinstance(v, list) else [v])
        ptype = str(_v(metadata_property.type))
        if ptype == MetadataPropertyType.terms.value:
            counts: dict[str, int] = {}
            for v in values:
                counts[str(v)] = counts.get(str(v), 0) + 1
            terms = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return TermsMetrics(total=len(values), values=[TermsMetrics.TermCount(term=t, count=c) for t, c in terms])
        nums = [n for n in (_num(v) for v in values) if n is not None]
        if ptype == MetadataPropertyType.integer.value:
            return IntegerMetadataMetrics(min=int(min(nums)) if nums else None, max=int(max(nums)) if nums else None)
        return FloatMetadataMetrics(min=min(nums) if nums else None, max=max(nums) if nums else None)
