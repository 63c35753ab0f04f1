"""Reading model replies, strictly.

Servers with structured output return clean JSON; others (and small models)
wrap it in prose, code fences or ``<think>`` blocks, or answer with a bare
label.  Only the reply's *own final answer* counts (:func:`parse_judge`):

1. the whole reply is JSON of the requested schema (structured output), or a bare label;
2. else the last JSON object of the schema in the reply, when nothing after it names a
   candidate and no earlier answer object of the reply disagrees with it;
3. else a last line that states the answer ("Answer: B", "Candidate B is more similar").

Text the reply quotes from the documents (``quoted``) never counts as an answer, and
anything ambiguous is *invalid* (asked again, then left without a vote), never a vote.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ANSWER_KEYS = ("answer", "label", "choice", "winner", "more_similar", "result")
TEXT_KEYS = ("text", "word", "answer", "rewrite", "result", "output")
SCHEMA_EXTRA = ("rationale", "reason", "explanation", "confidence")  # keys allowed beside "answer"
QUOTE_CONTEXT = 12  # characters of a document around an answer object that make it a quotation

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_WHOLE_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)\s*```", re.DOTALL)
_LABEL = r"[\*\"'(\[]*\s*(?:candidate\s+|option\s+|document\s+)?(A|B|tie)[\*\"')\]]*"
_END = r"\s*[.!]?\s*"
# whole-line statements of a final answer (matched against the reply's last line only)
_STATEMENTS = [
    re.compile(rf"(?:(?:my|the)\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=\-]?\s*{_LABEL}{_END}", re.IGNORECASE),
    re.compile(r"(?:candidate|option|document)\s+(A|B)[\*\"')\]]*\s+is\s+(?:the\s+)?more\s+similar"
               rf"(?:\s+to\s+the\s+anchor)?(?:\s+under\s+the\s+criterion)?{_END}", re.IGNORECASE),
    re.compile(rf"(?:the\s+)?more\s+similar(?:\s+(?:candidate|document|one))?\s+is\s+{_LABEL}{_END}", re.IGNORECASE),
    re.compile(r"\{\s*[\"']?answer[\"']?\s*:\s*[\"']?\s*(A|B|tie)\s*[\"']?\s*\}?\s*", re.IGNORECASE),  # cut-off JSON
]
_NAMES_LABEL = re.compile(r"\btie\b|\banswer\b|[{}]", re.IGNORECASE)
_UPPER_LABEL = re.compile(r"\b(?:A|B)\b")


@dataclass
class JudgeParse:
    label: str | None  # "A" | "B" | "tie" | None (invalid)
    how: str = ""  # json | bare | embedded-json | statement
    rationale: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.label is not None

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "how": self.how, "rationale": self.rationale, "error": self.error}


def normalise_label(value: Any, allow_tie: bool = True) -> str | None:
    """'A', 'a', ' (B) ', 'Candidate A', '**A**', 'tie', 'equal' -> 'A' | 'B' | 'tie' | None."""
    if not isinstance(value, str):
        return None
    v = value.strip().strip("*\"'`.()[]{}:;!, \n\t").strip()
    v = re.sub(r"^(?:candidate|option|document|answer)\s*[:\-]?\s*", "", v, flags=re.IGNORECASE).strip("*\"'`.()[] ")
    low = v.lower()
    if low in ("a", "b"):
        return low.upper()
    if allow_tie and low in ("tie", "equal", "neither", "both", "same", "draw"):
        return "tie"
    return None


def strip_wrappers(text: str) -> str:
    return _THINK.sub("", text or "").strip()


def json_spans(text: str) -> list[tuple[int, int, Any]]:
    """Every JSON object embedded in ``text`` as (start, end, value), scanning from each ``{``."""
    dec = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        found.append((i, end, obj))
        i = text.find("{", end)
    return found


def json_objects(text: str) -> list[Any]:
    """Every JSON object embedded in ``text``."""
    return [o for _, _, o in json_spans(text)]


def _label_from_obj(obj: Any, allow_tie: bool) -> tuple[str | None, str | None, bool]:
    """(label, rationale, had_answer_key) of a whole-reply JSON value."""
    if isinstance(obj, str):
        return normalise_label(obj, allow_tie), None, True
    if not isinstance(obj, dict):
        return None, None, False
    low = {str(k).lower(): v for k, v in obj.items()}
    rationale = low.get("rationale") or low.get("reason") or low.get("explanation")
    for k in ANSWER_KEYS:
        if k in low:
            return normalise_label(low[k] if isinstance(low[k], str) else str(low[k]), allow_tie), (
                rationale if isinstance(rationale, str) else None
            ), True
    return None, None, False


def _schema_answer(obj: Any) -> str | None:
    """The raw "answer" of an object of the requested schema (answer + optional rationale), else None."""
    if not isinstance(obj, dict):
        return None
    low = {str(k).lower(): v for k, v in obj.items()}
    if "answer" not in low or not set(low) <= {"answer", *SCHEMA_EXTRA} or not isinstance(low["answer"], str):
        return None
    return low["answer"]


def _is_quote(t: str, b: int, e: int, docs: Sequence[str]) -> bool:
    """Whether the answer object ``t[b:e]`` is copied from a document: it occurs there with at least
    QUOTE_CONTEXT characters of the reply around it matching the document too, or the whole document
    copied.  An answer object alone is the reply's own, even when a document holds the same."""
    obj = t[b:e]
    for d in docs:
        p = d.find(obj)
        while p != -1:
            left = 0
            while left < min(b, p) and t[b - left - 1] == d[p - left - 1]:
                left += 1
            right, end = 0, p + len(obj)
            while right < min(len(t) - e, len(d) - end) and t[e + right] == d[end + right]:
                right += 1
            if left + right >= QUOTE_CONTEXT or (left == p and right == len(d) - end):
                return True
            p = d.find(obj, p + 1)
    return False


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _whole_json(t: str) -> tuple[bool, Any]:
    """(True, value) when the whole reply (or one code fence that is the whole reply) is JSON."""
    m = _WHOLE_FENCE.fullmatch(t)
    for chunk in (t, m.group(1) if m else None):
        if chunk is None:
            continue
        try:
            return True, json.loads(chunk)
        except (json.JSONDecodeError, ValueError):
            continue
    return False, None


def _final_json(t: str, allow_tie: bool, quoted: Sequence[str]) -> JudgeParse | None:
    """The last schema object of the reply that is not quoted from a document; None when there is none."""
    spans = [(b, e, o, _is_quote(t, b, e, quoted)) for b, e, o in json_spans(t) if _schema_answer(o) is not None]
    own = [(e, o) for _, e, o, q in spans if not q]
    if not own:
        return None
    end, obj = own[-1]
    label = normalise_label(_schema_answer(obj), allow_tie)
    if label is None:
        return JudgeParse(None, "embedded-json", error=f"unknown label in {json.dumps(obj)[:80]!r}")
    tail = list(t[end:])
    for b, e, _, q in spans:  # quotations after the answer are not the reply's words
        if q and b >= end:
            tail[b - end:e - end] = " " * (e - b)
    rest = "".join(tail).strip().strip("`").strip()
    if _UPPER_LABEL.search(rest) or _NAMES_LABEL.search(rest):
        return JudgeParse(None, "embedded-json", error="text after the final JSON answer names a candidate")
    if {normalise_label(_schema_answer(o), allow_tie) for _, o in own} != {label}:
        return JudgeParse(None, "embedded-json", error="reply contains conflicting answers")
    rat = next((v for k, v in obj.items() if str(k).lower() in SCHEMA_EXTRA[:3] and isinstance(v, str)), None)
    return JudgeParse(label, "embedded-json", rat)


def _statement(line: str, allow_tie: bool) -> str | None:
    """The label a line states as the answer: the whole line, its last sentence or its last clause."""
    clean = line.strip().strip("*_#>` ").strip()
    parts = [clean, re.split(r"(?<=[.!?])\s+", clean)[-1], clean.rsplit(",", 1)[-1]]
    for part in dict.fromkeys(p.strip().strip("*_` ") for p in parts):
        for p in _STATEMENTS:
            m = p.fullmatch(part)
            if m:
                return normalise_label(m.group(1), allow_tie)
    return None


def _final_statement(t: str, allow_tie: bool, quoted: Sequence[str]) -> JudgeParse:
    """The answer stated by the reply's last line ("Answer: B"), if no other line states another."""
    docs = [_squash(d) for d in quoted]
    lines = [ln for ln in t.splitlines() if ln.strip() and not any(_squash(ln) in d for d in docs)]
    if not lines:
        return JudgeParse(None, error="the reply only quotes the documents")
    label = _statement(lines[-1], allow_tie)
    if label is None:
        return JudgeParse(None, error=f"no final answer found in {t[-80:]!r}")
    if any(_statement(ln, allow_tie) not in (None, label) for ln in lines[:-1]):
        return JudgeParse(None, "statement", error="reply states conflicting answers")
    return JudgeParse(label, "statement")


def _repeats_a_document(t: str, quoted: Sequence[str]) -> bool:
    """The whole reply is one of the documents (as text, or as the same JSON value)."""
    whole, obj = _whole_json(t)
    for doc in quoted:
        d = strip_wrappers(doc)
        if _squash(d) == _squash(t):
            return True
        if whole:
            dw, dobj = _whole_json(d)
            if dw and dobj == obj:
                return True
    return False


def parse_judge(text: str | None, *, allow_tie: bool = True, quoted: Sequence[str] = ()) -> JudgeParse:
    """The reply's own final answer; ``label=None`` if unreadable or ambiguous.

    ``quoted``: the documents shown to the model; an answer the reply copies from them is not its own."""
    if text is None or not text.strip():
        return JudgeParse(None, error="empty reply")
    t = strip_wrappers(text)
    quoted = list(dict.fromkeys([*quoted, *(strip_wrappers(q) for q in quoted)]))  # as the reply is read
    if _repeats_a_document(t, quoted):
        return JudgeParse(None, error="the reply repeats a document")
    whole, obj = _whole_json(t)
    if whole:  # structured output: the reply is the answer object
        label, rat, keyed = _label_from_obj(obj, allow_tie)
        if label:
            return JudgeParse(label, "json", rat)
        return JudgeParse(None, "json", error=f"{'unknown label' if keyed else 'no answer'} in {t[:80]!r}")
    label = normalise_label(t, allow_tie)
    if label:
        return JudgeParse(label, "bare")
    return _final_json(t, allow_tie, quoted) or _final_statement(t, allow_tie, quoted)


def parse_text(text: str | None, *, one_word: bool = False) -> str | None:
    """The text of a transform reply ({"text": ...}, fenced JSON, or plain text); None if empty."""
    if text is None:
        return None
    t = strip_wrappers(text)
    value: str | None = None
    candidates: list[Any] = []
    try:
        candidates.append(json.loads(t))
    except (json.JSONDecodeError, ValueError):
        for chunk in _FENCE.findall(t) or [t]:
            candidates.extend(json_objects(chunk))
    for obj in candidates:
        if isinstance(obj, str):
            value = obj
            break
        if isinstance(obj, dict):
            low = {str(k).lower(): v for k, v in obj.items()}
            for k in TEXT_KEYS:
                if isinstance(low.get(k), str):
                    value = low[k]
                    break
            if value is not None:
                break
    if value is None:
        if candidates and not _FENCE.search(t):
            return None  # JSON without a usable field
        value = _FENCE.sub(lambda m: m.group(1), t)
        value = re.sub(r"^\s*(?:answer|word|text|rewrite)\s*:\s*", "", value, flags=re.IGNORECASE)
    value = value.strip().strip("\"'`*").strip()
    if one_word and value:
        value = value.splitlines()[0].strip().strip(".,;:!\"'`*").strip()
    return value or None


def label_confidence(logprobs: list[dict] | None, label: str) -> dict[str, float] | None:
    """Probability of the chosen label from token logprobs (OpenAI ``choices[0].logprobs.content``).

    Finds the first token that reads as a label (``A``, ``"B``, `` tie``...) and
    matches ``label``; returns ``{"p": exp(logprob), "p_norm": p / sum over label
    alternatives in top_logprobs}`` or None when the reply carries no logprobs.
    """
    if not logprobs:
        return None
    toks = [t for t in logprobs if isinstance(t, dict)]
    # Prefer the token where the value of "answer" starts (a rationale before it may contain " A").
    joined, starts = "", []
    for t in toks:
        starts.append(len(joined))
        joined += t.get("token") or ""
    order = list(range(len(toks)))
    m = ([None] + list(re.finditer(r'"answer"\s*:\s*"?', joined, re.IGNORECASE)))[-1]
    if m is not None:
        pos = m.end()
        at = max((i for i, st in enumerate(starts) if st <= pos), default=0)
        order = list(range(at, len(toks))) + list(range(0, at))
    for i in order:
        tok = toks[i]
        if normalise_label(tok.get("token", ""), True) != label:
            continue
        lp = tok.get("logprob")
        if lp is None:
            return None
        p = math.exp(lp)
        alts: dict[str, float] = {}
        for alt in tok.get("top_logprobs") or []:
            lab = normalise_label(alt.get("token", ""), True)
            if lab and alt.get("logprob") is not None:
                alts[lab] = alts.get(lab, 0.0) + math.exp(alt["logprob"])
        alts[label] = max(alts.get(label, 0.0), p)
        total = sum(alts.values())
        return {"p": p, "p_norm": alts[label] / total if total > 0 else p}
    return None
