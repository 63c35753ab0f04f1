"""Every key of the TUI, in one place (the screens, the footer and the help screen read these)."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding


def _key(keys: str, action: str, label: str, tooltip: str | None = None, **kw: Any) -> Binding:
    """A screen key: (keys, action, label shown in the footer, longer help text); keys win over widgets."""
    return Binding(keys, action, label, priority=True, tooltip=tooltip or "", **kw)


PAIRWISE = [
    _key("a,1,left", "answer('A')", "A", "A is more similar to the anchor", key_display="a/←"),
    _key("b,2,right", "answer('B')", "B", "B is more similar to the anchor", key_display="b/→"),
    _key("t", "answer('tie')", "tie", "both are equally similar"),
    _key("c", "answer('cant_tell')", "can't tell", "the criterion does not apply to these documents"),
    _key("s", "answer('skip')", "skip", "skip (you will not see this triplet again)"),
    _key("u", "undo", "undo", "undo your last answer (it is kept, marked undone)"),
    _key("n", "rationale", "note", "add a rationale to this answer"),
    _key("question_mark", "help", "help", "this help", key_display="?"),
    _key("q", "quit_session", "quit", "quit (every answer is already saved)"),
]

BEST_OF_K = [
    _key("1", "pick(0)", "pick", "pick the candidate most similar to the anchor", key_display="1-k"),
    *[_key(str(i), f"pick({i - 1})", f"pick {i}", show=False) for i in range(2, 10)],
    _key("c", "answer('cant_tell')", "can't tell", "the criterion does not apply to these documents"),
    _key("s", "answer('skip')", "skip", "skip this grid"),
    _key("u", "undo", "undo", "undo your last answer (it is kept, marked undone)"),
    _key("n", "rationale", "note", "add a rationale to this answer"),
    _key("question_mark", "help", "help", "this help", key_display="?"),
    _key("q", "quit_session", "quit", "quit (every answer is already saved)"),
]

REVIEW = [
    _key("a,1,left", "answer('A')", "A", "adjudicate: A is more similar", key_display="a/←"),
    _key("b,2,right", "answer('B')", "B", "adjudicate: B is more similar", key_display="b/→"),
    _key("t", "answer('tie')", "tie", "adjudicate: a tie"),
    _key("c", "answer('cant_tell')", "can't tell", "adjudicate: the criterion does not apply"),
    _key("s", "answer('skip')", "next", "leave it for another reviewer"),
    _key("u", "undo", "undo", "undo your last adjudication"),
    _key("n", "rationale", "note", "add a rationale to the adjudication"),
    _key("question_mark", "help", "help", "this help", key_display="?"),
    _key("q", "quit_session", "quit", "quit (every answer is already saved)"),
]

SCROLL_HELP = [
    ("tab / shift+tab", "move between the anchor and the candidates"),
    ("↑ ↓ pgup pgdn", "scroll the focused text (or use the mouse wheel)"),
    ("ctrl+t", "light / dark theme"),
]

def key_label(b: Binding) -> str:
    return b.key_display or b.key.split(",")[0]


def footer_line(bindings: list[Binding], k: int | None = None) -> str:
    """The one-line key reminder, as Rich markup (fits 80 columns)."""
    parts = []
    for b in bindings:
        if not b.show:
            continue
        key = key_label(b)
        if key == "1-k" and k:
            key = f"1-{k}"
        parts.append(f"[b reverse]{key}[/] {b.description}")
    return "  ".join(parts)
