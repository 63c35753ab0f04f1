"""Push triplets to an Argilla 2.x dataset and pull the reviewers' responses back as votes.

* Dataset settings: text fields ``criterion``, ``anchor``, ``candidate_a``, ``candidate_b``
  (Markdown), a label question ``choice`` (A / B / tie / can't tell), an optional text
  question ``rationale``, metadata for filters and ``TaskDistribution(min_submitted=k)``.
* Record id = triplet id: pushing twice adds nothing; new triplets append.
* The presented order is pseudo-random per (dataset, triplet) and stored in the record's
  metadata (``swapped`` = 1 when the canonical *second* candidate is shown as A), so it
  survives re-pushes and lands in each pulled vote's ``swapped``.
* Suggestions (LM-judge votes) only with ``--suggestions``; they are never responses.
* Pull: submitted responses -> votes (source ``argilla``), discards -> ``skip`` votes,
  drafts ignored; a changed response supersedes the vote it changed (history kept);
  annotators are Argilla usernames.  Responses are read over REST (the SDK cannot read
  some discards back).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ..criteria import get_criterion
from ..errors import CondsimError, InputError
from ..models import Annotator, Triplet, Vote
from ..store_api import (
    CHOICE_LETTER,
    LETTER_CHOICE,
    documents_by_id,
    get_or_create_annotator,
    record_vote,
    to_canonical_choice,
)

DEFAULT_URL = "http://localhost:6900"
FIELDS = ("criterion", "anchor", "candidate_a", "candidate_b")
QUESTION = "choice"
RATIONALE = "rationale"
LABELS = {"A": "A", "B": "B", "tie": "Tie", "cant_tell": "Can't tell"}
SOURCE = "argilla"
PAGE = 500


class ArgillaError(CondsimError):
    pass


# --------------------------------------------------------------------------- connection


class sdk_errors:
    """Turn the SDK's and httpx's exceptions into one readable ``error:`` line."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, CondsimError):
            return False
        import httpx
        from argilla._exceptions import ArgillaError as SDKError

        if isinstance(exc, httpx.HTTPError):
            raise ArgillaError(f"Argilla server request failed: {exc.__class__.__name__}: {exc}") from exc
        if isinstance(exc, SDKError):
            cause = exc.__cause__ or exc.__context__
            detail = f"{exc}" + (f" ({cause})" if cause is not None and str(cause) not in str(exc) else "")
            raise ArgillaError(f"Argilla: {detail}") from exc
        return False


def connect(api_url: str | None = None, api_key: str | None = None, *, timeout: int = 60):
    """An SDK client after checking reachability, version and key (clear errors)."""
    import httpx

    url = (api_url or os.environ.get("ARGILLA_API_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("ARGILLA_API_KEY")
    if not key:
        raise ArgillaError("no Argilla API key: pass --api-key or set ARGILLA_API_KEY (`argilla serve` prints one)")
    try:
        r = httpx.get(url + "/api/v1/version", timeout=15)
    except httpx.HTTPError as exc:
        raise ArgillaError(
            f"cannot reach the Argilla server at {url}: {exc.__class__.__name__}: {exc or 'no answer'}. "
            "Is it running? (start one with `condsim-annot argilla serve`, or set ARGILLA_API_URL)"
        ) from None
    if r.status_code == 404:
        raise ArgillaError(
            f"{url} has no Argilla 2.x API (HTTP 404 at /api/v1/version): an Argilla 1.x server or another service? "
            "condsim-annot needs an Argilla 2.x server"
        )
    if r.status_code != 200:
        raise ArgillaError(f"the Argilla server at {url} answered HTTP {r.status_code} at /api/v1/version")
    try:
        version = str(r.json()["version"])
    except (ValueError, KeyError, TypeError):  # not JSON, or JSON without a version
        raise ArgillaError(f"{url} does not look like an Argilla server (no version at /api/v1/version)") from None
    check_version(version, url)
    me = httpx.get(url + "/api/v1/me", headers={"X-Argilla-Api-Key": key}, timeout=15)
    if me.status_code in (401, 403):
        raise ArgillaError(
            f"the Argilla server at {url} rejected the API key (HTTP {me.status_code}): "
            "check --api-key / ARGILLA_API_KEY"
        )
    if me.status_code != 200:
        raise ArgillaError(f"the Argilla server at {url} answered HTTP {me.status_code} at /api/v1/me")
    import argilla as rg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = rg.Argilla(api_url=url, api_key=key, timeout=timeout, retries=1)
    client.condsim_server_version = version  # type: ignore[attr-defined]
    client.condsim_me = me.json()  # type: ignore[attr-defined]
    return client


def check_version(server_version: str, url: str = "the server") -> None:
    import argilla as rg

    try:
        major, minor = (int(x) for x in server_version.split(".")[:2])
    except ValueError:
        raise ArgillaError(f"cannot read the Argilla version {server_version!r} of {url}") from None
    if major != 2 or minor < 4:
        raise ArgillaError(
            f"version mismatch: {url} runs Argilla {server_version}, but the argilla SDK here is {rg.__version__} "
            "and needs an Argilla server 2.4 or later within 2.x"
        )


# --------------------------------------------------------------------------- schema


def presented_swapped(dataset: str, triplet_id: int) -> bool:
    """Pseudo-random but stable per (dataset, triplet): re-pushes agree with the first push."""
    return hashlib.sha256(f"{dataset}\x00{triplet_id}".encode()).digest()[0] & 1 == 1


def build_settings(min_submitted: int):
    import argilla as rg

    return rg.Settings(
        guidelines=(
            "Read the **criterion**. Which candidate is more similar to the **anchor** *under that criterion* "
            "(ignore every other kind of similarity)? Choose A or B; `tie` when they are equally similar, "
            "`can't tell` when you cannot judge. Keys 1-4 choose, Enter submits. The rationale is optional. "
            "(made by condsim-annot)"
        ),
        fields=[
            rg.TextField(name="criterion", title="Criterion", use_markdown=True),
            rg.TextField(name="anchor", title="Anchor", use_markdown=True),
            rg.TextField(name="candidate_a", title="Candidate A", use_markdown=True),
            rg.TextField(name="candidate_b", title="Candidate B", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(
                name=QUESTION, title="Which candidate is more similar to the anchor under the criterion?",
                labels=dict(LABELS), required=True,
            ),
            rg.TextQuestion(name=RATIONALE, title="Rationale (optional)", required=False, use_markdown=False),
        ],
        metadata=[
            rg.IntegerMetadataProperty(name="triplet_id", title="Triplet id"),
            rg.TermsMetadataProperty(name="criterion_name", title="Criterion"),
            rg.TermsMetadataProperty(name="method", title="Proposed by"),
            rg.TermsMetadataProperty(name="strategy", title="Strategy"),
            rg.FloatMetadataProperty(name="margin", title="Ensemble margin"),
            rg.IntegerMetadataProperty(name="swapped", title="Canonical second shown as A",
                                       visible_for_annotators=False),
        ],
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
        allow_extra_metadata=True,
    )


def check_schema(dataset) -> None:
    """Raise when a dataset with this name was made by another tool."""
    s = dataset.settings
    fields = sorted(f.name for f in s.fields)
    questions = {q.name: q for q in s.questions}
    problems = []
    if fields != sorted(FIELDS):
        problems.append(f"fields {fields}")
    q = questions.get(QUESTION)
    if q is None:
        problems.append(f"questions {sorted(questions)} (no {QUESTION!r})")
    else:
        labels = getattr(q, "labels", None)
        labels = sorted(labels.keys() if isinstance(labels, dict) else labels or [])
        if labels != sorted(LABELS):
            problems.append(f"labels of {QUESTION!r} {labels}")
    if problems:
        raise ArgillaError(
            f"dataset {dataset.name!r} has another schema ({'; '.join(problems)}; condsim-annot expects fields "
            f"{list(FIELDS)} and a label question {QUESTION!r} with {list(LABELS)}): it was not made by "
            "`condsim-annot argilla push`; choose another --dataset"
        )


def find_dataset(client, name: str, workspace: str | None = None):
    """The dataset by name (in ``workspace``, or the only one with that name anywhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if workspace:
            ws = client.workspaces(workspace)
            if ws is None:
                return None
            return client.datasets(name=name, workspace=ws)
        found = [d for d in client.datasets.list() if d.name == name]
    if len(found) > 1:
        names = sorted(d.workspace.name for d in found)
        raise ArgillaError(f"dataset {name!r} exists in several workspaces ({', '.join(names)}): pass --workspace")
    return found[0].get() if found else None


def _records_rest(client, dataset_id, include: list[str]) -> Iterator[dict]:
    offset = 0
    while True:
        params: dict[str, Any] = {"offset": offset, "limit": PAGE}
        if include:
            params["include"] = include
        r = client.http_client.get(f"/api/v1/datasets/{dataset_id}/records", params=params)
        if r.status_code != 200:
            raise ArgillaError(f"cannot list records of dataset {dataset_id}: HTTP {r.status_code}: {r.text[:300]}")
        items = r.json().get("items", [])
        yield from items
        if len(items) < PAGE:
            return
        offset += len(items)


# --------------------------------------------------------------------------- push


@dataclass
class PushResult:
    dataset: str
    workspace: str
    created_dataset: bool
    added: int
    existing: int
    suggestions: int
    url: str


def _suggestion(session, triplet: Triplet, swapped: bool):
    """One suggestion from the LM judges' active votes (majority; score = agreement)."""
    rows = session.execute(
        select(Vote.choice, Vote.confidence, Annotator.name)
        .join(Annotator, Annotator.id == Vote.annotator_id)
        .where(Vote.triplet_id == triplet.id, Vote.state == "active", Annotator.kind == "llm",
               Vote.choice.in_(("first", "second", "tie", "cant_tell")))
    ).all()
    if not rows:
        return None
    counts = Counter(r[0] for r in rows)
    choice, n = counts.most_common(1)[0]
    presented = to_canonical_choice(choice, swapped)  # the swap is its own inverse
    label = CHOICE_LETTER[presented]
    agents = sorted({r[2] for r in rows if r[0] == choice})
    agent = ", ".join(agents)
    if len(agent) > 200:
        agent = agent[:197] + "..."
    if len(rows) == 1 and rows[0][1] is not None:
        score = float(rows[0][1])
    else:
        score = n / len(rows)
    import argilla as rg

    return rg.Suggestion(question_name=QUESTION, value=label, score=round(min(max(score, 0.0), 1.0), 4), agent=agent,
                         type="model")


def _ensure_dataset(client, workspace: str, dataset: str, min_submitted: int, log) -> tuple[Any, bool]:
    """The workspace and dataset, created with the condsim schema when missing (True if created now)."""
    import argilla as rg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = client.workspaces(workspace)
        if ws is None:
            ws = rg.Workspace(name=workspace, client=client).create()
            log(f"created workspace {workspace!r}")
        ds = client.datasets(name=dataset, workspace=ws)
    created = False
    if ds is not None and not list(ds.settings.fields) and not list(ds.settings.questions):
        ds.delete()  # an empty draft left by a create that failed half-way
        ds = None
    if ds is None:
        ds = rg.Dataset(name=dataset, workspace=ws, settings=build_settings(min_submitted), client=client).create()
        created = True
        log(f"created dataset {dataset!r} in workspace {workspace!r} (min_submitted={min_submitted})")
    else:
        check_schema(ds)
        current = getattr(ds.settings.distribution, "min_submitted", None)
        if current is not None and current != min_submitted:
            log(f"note: dataset {dataset!r} keeps min_submitted={current} (set when it was created)")
    return ds, created


def push(store, criterion: str, *, client, workspace: str, dataset: str, min_submitted: int = 2,
         suggestions: bool = False, limit: int | None = None, log=lambda m: None) -> PushResult:
    import argilla as rg

    if min_submitted < 1:
        raise InputError("--min-submitted must be at least 1")
    ds, created = _ensure_dataset(client, workspace, dataset, min_submitted, log)
    existing = {str(r.get("external_id")) for r in _records_rest(client, ds.id, [])}

    with store.session() as s:
        crit = get_criterion(s, criterion)
        q = select(Triplet).where(Triplet.criterion_id == crit.id).order_by(Triplet.priority.desc(), Triplet.id)
        triplets = list(s.scalars(q).all())
        if limit is not None:
            triplets = triplets[:limit]
        todo = [t for t in triplets if suggestions or str(t.id) not in existing]
        docs = documents_by_id(s, [i for t in todo for i in (t.anchor_id, t.first_id, t.second_id)])
        records, n_sugg = [], 0
        crit_text = f"**{crit.name}** — {crit.description}"
        for t in todo:
            swapped = presented_swapped(dataset, t.id)
            a_id, b_id = (t.second_id, t.first_id) if swapped else (t.first_id, t.second_id)
            meta: dict[str, Any] = {
                "triplet_id": t.id, "criterion_name": crit.name, "method": t.method or "manual",
                "strategy": t.strategy or "none", "swapped": int(swapped),
            }
            margin = (t.meta or {}).get("margin") if isinstance(t.meta, dict) else None
            if isinstance(margin, (int, float)):
                meta["margin"] = float(margin)
            sugg = []
            if suggestions:
                sg = _suggestion(s, t, swapped)
                if sg is not None:
                    sugg.append(sg)
                    n_sugg += 1
            records.append(
                rg.Record(
                    id=str(t.id),
                    fields={
                        "criterion": crit_text, "anchor": docs[t.anchor_id].text,
                        "candidate_a": docs[a_id].text, "candidate_b": docs[b_id].text,
                    },
                    metadata=meta,
                    suggestions=sugg,
                )
            )
    added = sum(1 for r in records if str(r.id) not in existing)
    if records:
        import logging

        import argilla.records._dataset_records as sdk_records

        logging.getLogger("argilla.sdk").setLevel(logging.ERROR)
        bar = sdk_records.tqdm
        sdk_records.tqdm = lambda iterable=None, **kw: iterable  # no progress bar on a CLI's stdout
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.records.log(records, batch_size=PAGE)
        finally:
            sdk_records.tqdm = bar
    url = f"{client.api_url.rstrip('/')}/dataset/{ds.id}/annotation-mode"
    return PushResult(dataset, workspace, created, added, len(triplets) - added, n_sugg, url)


# --------------------------------------------------------------------------- pull


@dataclass
class PullResult:
    dataset: str
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    skips: int = 0
    drafts: int = 0
    unknown_triplets: int = 0
    other_criterion: int = 0
    invalid: int = 0
    annotators: set = field(default_factory=set)


def user_names(client) -> dict[str, str]:
    """Argilla user UUID -> username (the exports carry only UUIDs)."""
    r = client.http_client.get("/api/v1/users")
    if r.status_code == 200:
        return {str(u["id"]): u["username"] for u in r.json().get("items", [])}
    if r.status_code == 403:  # an annotator key can only see itself
        me = getattr(client, "condsim_me", None) or client.http_client.get("/api/v1/me").json()
        return {str(me["id"]): me["username"]}
    raise ArgillaError(f"cannot list Argilla users: HTTP {r.status_code}: {r.text[:200]}")


def _fingerprint(status: str, choice: str, rationale: str | None) -> str:
    return f"{status}|{choice}|{rationale or ''}"


def pull(store, criterion: str, *, client, dataset: str, workspace: str | None = None) -> PullResult:
    ds = find_dataset(client, dataset, workspace)
    if ds is None:
        where = f" in workspace {workspace!r}" if workspace else ""
        raise ArgillaError(f"no dataset {dataset!r}{where} on {client.api_url}: push first")
    check_schema(ds)
    users = user_names(client)
    res = PullResult(dataset)
    records = list(_records_rest(client, ds.id, ["responses"]))
    with store.transaction() as s:
        crit = get_criterion(s, criterion)
        valid = set(s.scalars(select(Triplet.id).where(Triplet.criterion_id == crit.id)).all())
        ann_cache: dict[str, int] = {}
        for rec in records:
            meta = rec.get("metadata") or {}
            if meta.get("criterion_name") not in (None, crit.name):
                res.other_criterion += 1
                continue
            try:
                tid = int(meta.get("triplet_id", rec.get("external_id")))
            except (TypeError, ValueError):
                res.unknown_triplets += 1
                continue
            if tid not in valid:
                res.unknown_triplets += 1
                continue
            swapped = bool(int(meta.get("swapped", 0) or 0))
            for resp in rec.get("responses") or []:
                status = resp.get("status")
                if status == "draft":
                    res.drafts += 1
                    continue
                values = resp.get("values") or {}
                rationale = (values.get(RATIONALE) or {}).get("value") or None
                if status == "discarded":
                    choice, label = "skip", None
                elif status == "submitted":
                    label = (values.get(QUESTION) or {}).get("value")
                    if label not in LETTER_CHOICE:
                        res.invalid += 1
                        continue
                    choice = to_canonical_choice(LETTER_CHOICE[label], swapped)
                else:
                    continue
                ext = f"argilla:{resp['id']}"
                fp = _fingerprint(status, choice, rationale)
                last = s.scalars(select(Vote).where(Vote.external_id == ext).order_by(Vote.id.desc())).first()
                if last is not None and (last.meta or {}).get("argilla", {}).get("fingerprint") == fp:
                    res.unchanged += 1
                    continue
                uid = str(resp.get("user_id"))
                name = users.get(uid) or f"argilla-user-{uid}"
                if name not in ann_cache:
                    ann_cache[name] = get_or_create_annotator(s, name, kind="human").id
                record_vote(
                    s, tid, ann_cache[name], choice, source=SOURCE, swapped=swapped, rationale=rationale,
                    external_id=ext, session_id=str(ds.id)[:64],
                    meta={"argilla": {
                        "dataset": ds.name, "dataset_id": str(ds.id), "record_id": rec.get("id"),
                        "response_id": resp["id"], "user_id": uid, "status": status, "label": label,
                        "updated_at": resp.get("updated_at"), "fingerprint": fp,
                    }},
                )
                res.annotators.add(name)
                if status == "discarded":
                    res.skips += 1
                if last is None:
                    res.added += 1
                else:
                    res.changed += 1
    return res
