"""Robust reading of model replies.

Servers with structured output return clean JSON; others (and small models)
wrap it in prose, code fences or ``<think>`` blocks, or answer with a bare
label.  :func:`parse_judge` accepts all of these and refuses anything ambiguous
(two different labels), so a reply that quotes a document's "answer A" next to
its own "B" is *invalid* (and retried), never silently misread.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

ANSWER_KEYS = ("answer", "label", "choice", "winner", "more_similar", "result")
TEXT_KEYS = ("text", "word", "answer", "rewrite", "result", "output")

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_PATTERNS = [
    re.compile(r"[\"']?\b(?:answer|label|choice)[\"']?\s*:\s*[\"']?\s*(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\b(?:final\s+)?answer\s*(?:is)?\s*[:=\-]?\s*[\*\"'(\[]*\s*(?:candidate\s+|option\s+|document\s+)?(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\b(?:candidate|option|document)\s+(A|B)\b[\*\"')\]]*\s+is\s+(?:the\s+)?more\s+similar", re.IGNORECASE),
    re.compile(r"\bmore\s+similar\s+(?:candidate\s+)?is\s+[\*\"'(\[]*\s*(?:candidate\s+|option\s+|document\s+)?(A|B)\b", re.IGNORECASE),
]


@dataclass
class JudgeParse:
    label: Optional[str]  # "A" | "B" | "tie" | None (invalid)
    how: str = ""  # json | fence | embedded-json | bare | pattern
    rationale: Optional[str] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.label is not None

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "how": self.how, "rationale": self.rationale, "error": self.error}


def normalise_label(value: Any, allow_tie: bool = True) -> Optional[str]:
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


def json_objects(text: str) -> list[Any]:
    """Every JSON object embedded in ``text`` (scanning from each ``{``)."""
    dec = json.JSONDecoder()
    found: list[Any] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        found.append(obj)
        i = text.find("{", end)
    return found


def _label_from_obj(obj: Any, allow_tie: bool) -> tuple[Optional[str], Optional[str], bool]:
    """(label, rationale, had_answer_key)."""
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


def _unique(labels: Iterable[Optional[str]]) -> tuple[Optional[str], bool]:
    got = {x for x in labels if x}
    if len(got) == 1:
        return got.pop(), False
    return None, len(got) > 1


def parse_judge(text: Optional[str], *, allow_tie: bool = True) -> JudgeParse:
    """Read a judge's label from any reasonable reply; ``label=None`` if unreadable or ambiguous."""
    if text is None or not text.strip():
        return JudgeParse(None, error="empty reply")
    t = strip_wrappers(text)
    # 1. the whole reply is JSON
    try:
        obj = json.loads(t)
    except (json.JSONDecodeError, ValueError):
        obj = None
    if obj is not None:
        label, rat, keyed = _label_from_obj(obj, allow_tie)
        if label:
            return JudgeParse(label, "json", rat)
        if keyed:
            return JudgeParse(None, "json", error=f"unknown label in {t[:80]!r}")
    # 2. bare label ("A", "**B**", "tie.")
    label = normalise_label(t, allow_tie)
    if label:
        return JudgeParse(label, "bare")
    # 3. JSON in code fences, then JSON objects anywhere in prose
    for how, chunks in (("fence", _FENCE.findall(t)), ("embedded-json", [t])):
        results = []
        for chunk in chunks:
            for o in json_objects(chunk):
                lab, rat, keyed = _label_from_obj(o, allow_tie)
                if keyed:
                    results.append((lab, rat))
        if results:
            label, conflict = _unique(r[0] for r in results)
            if conflict:
                return JudgeParse(None, how, error="reply contains conflicting answers")
            if label:
                rat = next((r[1] for r in results if r[0] == label and r[1]), None)
                return JudgeParse(label, how, rat)
    # 4. phrases: "Answer: A", "Candidate B is more similar"
    hits = [normalise_label(m.group(1), allow_tie) for p in _PATTERNS for m in p.finditer(t)]
    label, conflict = _unique(hits)
    if conflict:
        return JudgeParse(None, "pattern", error="reply names both candidates as the answer")
    if label:
        return JudgeParse(label, "pattern")
    return JudgeParse(None, error=f"no answer found in {t[:80]!r}")


def parse_text(text: Optional[str], *, one_word: bool = False) -> Optional[str]:
    """The text of a transform reply ({"text": ...}, fenced JSON, or plain text); None if empty."""
    if text is None:
        return None
    t = strip_wrappers(text)
    value: Optional[str] = None
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


def label_confidence(logprobs: Optional[list[dict]], label: str) -> Optional[dict[str, float]]:
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
    m = None
    for m in re.finditer(r'"answer"\s*:\s*"?', joined, re.IGNORECASE):
        pass
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
