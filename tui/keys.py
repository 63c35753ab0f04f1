"""Every key of the TUI, in one place (the screens, the footer and the help screen read these)."""

from __future__ import annotations

from textual.binding import Binding

# (keys, action, label shown in the footer, longer help text)
PAIRWISE = [
    Binding("a,1,left", "answer('A')", "A", key_display="a/←", priority=True, tooltip="A is more similar to the anchor"),
    Binding("b,2,right", "answer('B')", "B", key_display="b/→", priority=True, tooltip="B is more similar to the anchor"),
    Binding("t", "answer('tie')", "tie", priority=True, tooltip="both are equally similar"),
    Binding("c", "answer('cant_tell')", "can't tell", priority=True, tooltip="the criterion does not apply to these documents"),
    Binding("s", "answer('skip')", "skip", priority=True, tooltip="skip (you will not see this triplet again)"),
    Binding("u", "undo", "undo", priority=True, tooltip="undo your last answer (it is kept, marked undone)"),
    Binding("n", "rationale", "note", priority=True, tooltip="add a rationale to this answer"),
    Binding("question_mark", "help", "help", key_display="?", priority=True, tooltip="this help"),
    Binding("q", "quit_session", "quit", priority=True, tooltip="quit (every answer is already saved)"),
]

BEST_OF_K = [
    Binding("1", "pick(0)", "pick", key_display="1-k", priority=True, tooltip="pick the candidate most similar to the anchor"),
    *[Binding(str(i), f"pick({i - 1})", f"pick {i}", show=False, priority=True) for i in range(2, 10)],
    Binding("c", "answer('cant_tell')", "can't tell", priority=True, tooltip="the criterion does not apply to these documents"),
    Binding("s", "answer('skip')", "skip", priority=True, tooltip="skip this grid"),
    Binding("u", "undo", "undo", priority=True, tooltip="undo your last answer (it is kept, marked undone)"),
    Binding("n", "rationale", "note", priority=True, tooltip="add a rationale to this answer"),
    Binding("question_mark", "help", "help", key_display="?", priority=True, tooltip="this help"),
    Binding("q", "quit_session", "quit", priority=True, tooltip="quit (every answer is already saved)"),
]

REVIEW = [
    Binding("a,1,left", "answer('A')", "A", key_display="a/←", priority=True, tooltip="adjudicate: A is more similar"),
    Binding("b,2,right", "answer('B')", "B", key_display="b/→", priority=True, tooltip="adjudicate: B is more similar"),
    Binding("t", "answer('tie')", "tie", priority=True, tooltip="adjudicate: a tie"),
    Binding("c", "answer('cant_tell')", "can't tell", priority=True, tooltip="adjudicate: the criterion does not apply"),
    Binding("s", "answer('skip')", "next", priority=True, tooltip="leave it for another reviewer"),
    Binding("u", "undo", "undo", priority=True, tooltip="undo your last adjudication"),
    Binding("n", "rationale", "note", priority=True, tooltip="add a rationale to the adjudication"),
    Binding("question_mark", "help", "help", key_display="?", priority=True, tooltip="this help"),
    Binding("q", "quit_session", "quit", priority=True, tooltip="quit (every answer is already saved)"),
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
