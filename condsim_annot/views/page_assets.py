"""The views page's stylesheet and script (``page.css``, ``page.js`` beside this module), read once and inlined.

Hand-written canvas code: two linked maps (drag a rectangle in one to select documents,
they are highlighted in the other; Esc clears), hover shows a document's id and text,
a click lists its nearest neighbours under each criterion.  Document text is only ever
put into the page with ``textContent`` / ``title`` (never as HTML).
"""

from __future__ import annotations

from importlib.resources import files

CSS = files("condsim_annot.views").joinpath("page.css").read_text(encoding="utf-8")
JS = files("condsim_annot.views").joinpath("page.js").read_text(encoding="utf-8")
