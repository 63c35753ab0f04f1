"""The screens of the labeling app: pairwise, best-of-k, review, plus help and rationale modals.

Screens are views: every store operation goes through the app's :class:`~condsim_annot.queue.Queue`
and is committed before the screen shows the next question.
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from rich.markdown import Markdown
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from ..queue import GroupItem, Item, ReviewItem
from . import keys

if TYPE_CHECKING:  # pragma: no cover
    pass


def _fmt_eta(s: float | None) -> str:
    if s is None:
        return "ETA -"
    s = int(s)
    if s >= 3600:
        return f"ETA {s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"ETA {s // 60}m{s % 60:02d}s"
    return f"ETA {s}s"


def _bar(done: int, total: int | None, width: int = 20) -> Text:
    """A text progress bar (cheaper to redraw than a ProgressBar widget)."""
    if not total:
        return Text("░" * width + "    ", style="dim")
    frac = min(done / total, 1.0)
    full = int(frac * width)
    return Text.assemble(("━" * full, "bold green"), ("─" * (width - full), "dim"),
                         (f" {frac:4.0%} ", ""))


_STRIPS: OrderedDict[tuple, list[Strip]] = OrderedDict()  # (doc id, text hash, width, style) -> rendered lines
_STRIPS_MAX = 256


def _why_empty(why: dict) -> Text:
    """Explain an empty queue: nothing proposed yet, all answered, or the rest held by enough others."""
    total, mine, overlap = why["total"], why["mine"], why["overlap"]
    if total == 0:
        return Text("There are no triplets for this criterion yet: propose some first (condsim-annot propose).\n\n")
    rest = total - mine
    t = Text(f"You answered {mine} of the {total} triplets")
    if rest <= 0:
        return t.append(".\n\n")
    plural = "s" if overlap != 1 else ""
    t.append(f"; the other {rest} already have {overlap} annotator{plural} each (--overlap {overlap}).\n")
    if why["most_others"] >= overlap:
        t.append("To add your votes to them too, start again with ")
        t.append(f"--overlap {why['most_others'] + 1}", "bold")
        t.append(".\n")
    return t.append("\n")


class DocView(ScrollView, can_focus=True):
    """A document in a scrolling, bordered box, rendered as Markdown.

    A line-API widget: the Markdown is rendered to strips once per (document, width), kept in
    a small cache that :meth:`warm` fills for the next triplet while the annotator reads, so a
    key press only swaps strips and repaints the box."""

    def __init__(self, title: str, **kw):
        super().__init__(**kw)
        self.border_title = title
        self._text: str | None = None
        self._doc_id = None
        self._strips: list[Strip] = []
        self._width = -1

    def _content_width(self) -> int:
        return self.size.width - self.styles.scrollbar_size_vertical  # scrollbar-gutter: stable

    def set_doc(self, text: str | None, subtitle: str = "", title: str | None = None, doc_id=None) -> None:
        if doc_id is not None and doc_id == self._doc_id:
            return  # same document as before (e.g. the same anchor): nothing to redraw
        self._doc_id = doc_id
        self._text = text or ""
        old_height = len(self._strips)
        self._width = -1
        self._layout_lines(self._content_width())
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        if title is not None and title != self.border_title:
            self.border_title = title
        if self.scroll_y:
            self.scroll_to(0, 0, animate=False)
        auto_height = self.styles.height is not None and self.styles.height.is_auto
        self.refresh(layout=auto_height and len(self._strips) != old_height)

    def _render_strips(self, doc_id, text: str, width: int) -> list[Strip]:
        style = self.rich_style
        key = (doc_id, hash(text), width, style)  # the text too: ids repeat across stores, texts get updated
        got = _STRIPS.get(key)
        if got is not None:
            _STRIPS.move_to_end(key)
            return got
        console = self.app.console
        options = console.options.update(width=width, height=None, highlight=False)
        lines = console.render_lines(Markdown(text, hyperlinks=False), options, style=style, pad=True, new_lines=False)
        strips = [Strip(line, width) for line in lines]
        while strips and not strips[-1].text.strip():
            strips.pop()  # Markdown ends paragraphs with a blank line
        _STRIPS[key] = strips
        while len(_STRIPS) > _STRIPS_MAX:
            _STRIPS.popitem(last=False)
        return strips

    def warm(self, doc_id, text: str) -> None:
        """Render a document this box will show next (at its current width), without showing it."""
        width = self._content_width()
        if width > 0:
            self._render_strips(doc_id, text or "", width)

    def _layout_lines(self, width: int) -> None:
        if width <= 0 or self._text is None:
            self._strips, self._width = [], width
            self.virtual_size = Size(0, 0)
            return
        if width == self._width:
            return
        self._strips = self._render_strips(self._doc_id, self._text, width)
        self._width = width
        self.virtual_size = Size(width, len(self._strips))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._layout_lines(width - self.styles.scrollbar_size_vertical)
        return len(self._strips)

    def on_resize(self, event) -> None:
        self._layout_lines(self._content_width())

    def render_line(self, y: int) -> Strip:
        width = self._content_width()
        if width != self._width:
            self._layout_lines(width)
        i = y + int(self.scroll_y)
        if 0 <= i < len(self._strips):
            return self._strips[i]
        return Strip.blank(width, self.rich_style)


class BaseAnnotateScreen(Screen):
    """Criterion on top, the question in the middle, progress and keys at the bottom."""

    MODE = "pairwise"
    KEYS: list[Binding] = []

    def __init__(self, **kw):
        super().__init__(**kw)
        self.item = None
        self.flash = ""

    @property
    def queue(self):
        return self.app.queue  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static("", id="criterion")
        with Vertical(id="body"):
            yield from self.compose_body()
        yield Static("", id="empty")
        yield Static("", id="stats")
        yield Static(keys.footer_line(self.KEYS, getattr(self.app, "k", None)), id="keys")

    def compose_body(self) -> ComposeResult:  # pragma: no cover - overridden
        yield from ()

    def on_mount(self) -> None:
        self.query_one("#empty").display = False
        self.load_next()
        # what is left to do: counted once now, then every two minutes (others label too), never on a key press
        self.app.count_in_background()  # type: ignore[attr-defined]
        self.set_interval(120, self.app.count_in_background)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- showing

    def load_next(self) -> None:
        self.show(self.queue.next())

    def show(self, item) -> None:
        self.item = item
        empty = self.query_one("#empty", Static)
        body = self.query_one("#body")
        if item is None:
            body.display = False
            empty.display = True
            empty.update(self.empty_text())
            self.explain_empty()
            self.query_one("#criterion", Static).update(Text("condsim-annot", style="bold"))
            self._shown_criterion = None
        else:
            body.display = True
            empty.display = False
            c = item.criterion
            if getattr(self, "_shown_criterion", None) != c:
                self._shown_criterion = c
                self._set_header(c)
            self.show_item(item)
            item.shown_at = time.monotonic()
        self.update_progress()
        if item is not None:
            # once this one is drawn, claim the following one while the annotator reads
            self.call_after_refresh(self.queue.prefetch, item, self._warm_from_thread)

    class Ahead(Message):
        """The look-ahead claim is ready (posted from the queue's thread; post_message is thread-safe)."""

        def __init__(self, item) -> None:
            super().__init__()
            self.item = item

    def _warm_from_thread(self, item) -> None:
        self.post_message(self.Ahead(item))  # never blocks the queue's thread, even while the app closes

    def on_base_annotate_screen_ahead(self, message: BaseAnnotateScreen.Ahead) -> None:
        self.warm(message.item)
        # while the annotator reads: collect what the last answer left behind and freeze the
        # survivors (the strip cache, the claimed item), so the collector's full passes stay
        # small; unfrozen, they grew until one landed on a key press every ~30 answers (60-100 ms)
        gc.collect()
        gc.freeze()

    def warm(self, item) -> None:
        """Render the next item's documents into the cache (runs while the annotator reads)."""

    def _warm_boxes(self, pairs) -> None:
        for box_id, doc in pairs:
            try:
                self.query_one(box_id, DocView).warm(doc.id, doc.text)
            except NoMatches:  # the screen is closing: nothing to warm
                pass

    def _set_header(self, c) -> None:
        head = Text.assemble((c.name, "bold"), (f" v{c.version}" if c.version > 1 else "", "dim"), ("  ", ""),
                             (c.description, ""))
        self.query_one("#criterion", Static).update(head)

    def show_item(self, item) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def empty_text(self, why: dict | None = None) -> Text:
        t = Text.assemble(("Nothing left for you to label here.\n\n", "bold"))
        if why is not None:
            t.append_text(_why_empty(why))
        t.append_text(Text.assemble(("Every answer is saved. Press ", ""), ("q", "bold reverse"),
                                    (" to quit and see the summary.", "")))
        return t

    def explain_empty(self) -> None:
        """Say why the queue is empty (counted in a worker thread: a big store takes a moment)."""

        def work() -> None:
            try:
                why = self.queue.why_empty()
            except SQLAlchemyError:  # the store closed while the app quits: no explanation to show
                return
            self.app.call_from_thread(self._show_why, why)

        self.run_worker(work, thread=True, exclusive=True, group="why-empty", exit_on_error=False)

    def _show_why(self, why: dict) -> None:
        if self.item is None and self.is_attached:
            self.query_one("#empty", Static).update(self.empty_text(why))

    def update_progress(self) -> None:
        p = self.queue.progress()
        rate = f"{p.votes_per_min:.1f}/min" if p.votes_per_min else "-/min"
        assigned = str(p.assigned) if p.assigned is not None else "…"
        noted = self.item is not None and getattr(self.item, "rationale", None) and not self.flash.startswith("✎")
        note = "  ✎ note" if noted else ""
        line = Text.assemble(_bar(p.done, p.assigned), (f"{p.done}/{assigned}", "bold"),
                             f" · {rate} · {_fmt_eta(p.eta_s)}", (note, "italic"),
                             (f"  {self.flash}" if self.flash else "", "green"))
        self.query_one("#stats", Static).update(line, layout=False)  # one fixed line: no relayout needed

    # ---------------------------------------------------------------- actions

    def action_answer(self, choice: str) -> None:
        if self.item is None:
            return
        label = {"A": "A", "B": "B", "tie": "tie", "cant_tell": "can't tell", "skip": "skipped"}.get(choice, choice)
        self.commit(choice, label)

    def commit(self, choice, label: str) -> None:
        item = self.item
        self.queue.answer(item, choice)  # committed to the store before anything else is shown
        self.flash = f"✓ saved {label}" if choice != "skip" else "✓ skipped"
        self.load_next()

    def action_undo(self) -> None:
        back = self.queue.undo()
        if back is None:
            self.flash = "nothing to undo"
            self.update_progress()
            return
        was = getattr(back, "previous", None)
        was = {"cant_tell": "can't tell", "skip": "skipped"}.get(was, was)
        self.flash = f"↶ undone: was {was}" if was else "↶ undone"
        self.show(back)

    def action_rationale(self) -> None:
        if self.item is None:
            return

        def done(text: str | None) -> None:
            if text is not None and self.item is not None:
                self.item.rationale = text.strip() or None
                self.flash = "✎ note kept" if self.item.rationale else ""
                self.update_progress()

        self.app.push_screen(RationaleScreen(self.item.rationale or ""), done)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.KEYS, self.MODE, getattr(self.app, "k", None)))

    def action_quit_session(self) -> None:
        self.app.exit(self.queue.summary())


class PairwiseScreen(BaseAnnotateScreen):
    MODE = "pairwise"
    KEYS = keys.PAIRWISE
    BINDINGS = keys.PAIRWISE

    def compose_body(self) -> ComposeResult:
        yield DocView("Anchor", id="anchor")
        with Horizontal(id="candidates"):
            yield DocView("A", id="cand-a", classes="cand")
            yield DocView("B", id="cand-b", classes="cand")

    def warm(self, item) -> None:
        if isinstance(item, (Item, ReviewItem)):
            self._warm_boxes([("#anchor", item.anchor), ("#cand-a", item.a), ("#cand-b", item.b)])

    def show_item(self, item: Item) -> None:
        self.query_one("#anchor", DocView).set_doc(item.anchor.text, item.anchor.ext_id, doc_id=item.anchor.id)
        self.query_one("#cand-a", DocView).set_doc(item.a.text, item.a.ext_id, doc_id=item.a.id)
        self.query_one("#cand-b", DocView).set_doc(item.b.text, item.b.ext_id, doc_id=item.b.id)


class ReviewScreen(PairwiseScreen):
    MODE = "review"
    KEYS = keys.REVIEW
    BINDINGS = keys.REVIEW

    def compose_body(self) -> ComposeResult:
        yield from super().compose_body()
        with VerticalScroll(id="votes"):
            yield Static("", id="votes-text")

    def show_item(self, item: ReviewItem) -> None:
        super().show_item(item)
        box = self.query_one("#votes")
        box.border_title = f"Votes ({item.reason})" if item.reason else "Votes"
        t = Text()
        for v in item.votes:
            style = {"A": "bold cyan", "B": "bold magenta"}.get(v.choice, "bold")
            t.append(f"{v.annotator}", "bold")
            t.append(f" ({v.kind if v.kind == 'llm' else v.source}) ", "dim")
            t.append(v.choice.replace("cant_tell", "can't tell"), style)
            if v.confidence is not None:
                t.append(f" p={v.confidence:.2f}", "dim")
            if v.rationale:
                t.append(f" — {v.rationale}", "italic")
            t.append("\n")
        self.query_one("#votes-text", Static).update(t if item.votes else Text("(no votes)", "dim"))
        self.query_one("#votes").scroll_home(animate=False)

    def explain_empty(self) -> None:
        pass  # the review queue's own message says it all

    def empty_text(self, why: dict | None = None) -> Text:
        return Text.assemble(("No disagreements left to review.\n\n", "bold"), ("Press ", ""), ("q", "bold reverse"),
                             (" to quit.", ""))


class BestOfKScreen(BaseAnnotateScreen):
    MODE = "best-of-k"
    KEYS = keys.BEST_OF_K
    BINDINGS = keys.BEST_OF_K

    def compose_body(self) -> ComposeResult:
        yield DocView("Anchor", id="anchor")
        with Grid(id="grid"):
            for i in range(self.app.k):  # type: ignore[attr-defined]
                yield DocView(str(i + 1), id=f"cand-{i}", classes="cand")

    def show_item(self, item: GroupItem) -> None:
        self.query_one("#anchor", DocView).set_doc(item.anchor.text, item.anchor.ext_id, doc_id=item.anchor.id)
        for i in range(self.app.k):  # type: ignore[attr-defined]
            box = self.query_one(f"#cand-{i}", DocView)
            if i < len(item.candidates):
                box.display = True
                box.set_doc(item.candidates[i].text, item.candidates[i].ext_id, title=str(i + 1))
            else:
                box.display = False

    def action_pick(self, index: int) -> None:
        if self.item is None or index >= len(self.item.candidates):
            return
        self.commit(index, str(index + 1))


# --------------------------------------------------------------------------- modals


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q,enter", "dismiss_help", "close")]

    def __init__(self, bindings: list[Binding], mode: str, k: int | None = None):
        super().__init__()
        self._keylist = bindings
        self._mode = mode
        self._k = k

    def compose(self) -> ComposeResult:
        t = Text()
        intro = {
            "pairwise": "Which candidate, A or B, is more similar to the anchor under the criterion shown on top?",
            "best-of-k": f"Which of the {self._k or 'k'} candidates is most similar to the anchor under the criterion?",
            "review": "These votes disagree. Read them and record the answer you adjudicate.",
        }[self._mode]
        t.append(intro + "\n\n", "bold")
        for b in self._keylist:
            if not b.show and not b.tooltip:
                continue
            key = keys.key_label(b).replace("1-k", f"1-{self._k}" if self._k else "1-k")
            if "," in b.key and b.key_display != "1-k":
                key = b.key.replace(",", "/").replace("left", "←").replace("right", "→")
            t.append(f" {key:>15} ", "bold reverse")
            t.append(f"  {b.tooltip or b.description}\n")
        for key, what in keys.SCROLL_HELP:
            t.append(f" {key:>15} ", "reverse")
            t.append(f"  {what}\n")
        t.append("\nEvery answer is saved when you press its key.", "dim")
        with VerticalScroll(id="help-box"):
            yield Static(t)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class RationaleScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: str = ""):
        super().__init__()
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="rationale-box"):
            yield Static("Why? (saved with your next answer on this screen; enter keeps it, esc cancels)",
                         id="rationale-label")
            yield Input(value=self._current, placeholder="e.g. both use induction, but A also bounds the sum",
                        id="rationale-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
