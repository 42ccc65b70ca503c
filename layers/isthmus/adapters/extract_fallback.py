"""Text extraction without markitdown: the libraries markitdown itself uses for the main formats, read directly.

The cloud deployment cannot carry markitdown (its PDF/DOCX/XLSX/PPTX extras are 333 MB installed for manylinux
py3.11: pandas, numpy, onnxruntime for magika), over Lambda's 250 MB for a function and its layers. ExtractLayer
(extract_layer/) carries these instead: pdfminer.six for PDF (its text layer, as markitdown reads it), mammoth
for DOCX, openpyxl for XLSX. PPTX and HTML are read with the stdlib (zipfile + ElementTree, html.parser):
python-pptx would bring lxml and Pillow (35 MB) for what is a walk over the slides' XML.

Each reader returns the file's text (Markdown where the format has structure, as markitdown does); a library
that is not installed makes its format unsupported (None from ``reader_for``), never an error.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zipfile

# The readers import what they use when first called: the inference function builds this adapter at init, and
# zipfile, ElementTree, html.parser and importlib.util would add ~10 ms to every cold start that never sees a file.
Reader = Callable[[bytes], str]


def _pdf(data: bytes) -> str:
    from pdfminer.high_level import extract_text

    return str(extract_text(io.BytesIO(data)))


def _docx(data: bytes) -> str:
    import mammoth

    # Raw text, one paragraph a block: mammoth's Markdown writer escapes every period and parenthesis
    # ("12\. Noon \(UTC\)"), noise a model reads as part of the text.
    return str(mammoth.extract_raw_text(io.BytesIO(data)).value)


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _xlsx(data: bytes) -> str:
    from openpyxl import load_workbook

    # read_only streams the rows; data_only gives the values Excel last computed, not the formulas.
    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sections = []
        for sheet in workbook.worksheets:
            rows = [[_cell(value) for value in row] for row in sheet.iter_rows(values_only=True)]
            rows = [row for row in rows if any(row)]
            if not rows:
                continue
            width = max(len(row) for row in rows)
            rows = [row + [""] * (width - len(row)) for row in rows]
            lines = [f"## {sheet.title}", "", "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
            lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
            sections.append("\n".join(lines))
        return "\n\n".join(sections)
    finally:
        workbook.close()


_PRESENTATION_NS = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_DRAWING_NS = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_RELATIONSHIP_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_PACKAGE_RELS_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _slide_paths(archive: zipfile.ZipFile) -> list[str]:
    """The slides in the order the deck shows them (presentation.xml's list), not the order of their part names."""
    from xml.etree import ElementTree

    presentation = ElementTree.fromstring(archive.read("ppt/presentation.xml"))
    relations = ElementTree.fromstring(archive.read("ppt/_rels/presentation.xml.rels"))
    targets = {rel.get("Id"): rel.get("Target", "") for rel in relations.iter(f"{_PACKAGE_RELS_NS}Relationship")}
    paths = []
    for slide in presentation.iter(f"{_PRESENTATION_NS}sldId"):
        target = targets.get(slide.get(_RELATIONSHIP_ID), "")
        if target:
            paths.append(target.lstrip("/") if target.startswith("/") else
                         posixpath.normpath(posixpath.join("ppt", target)))
    return paths


def _pptx(data: bytes) -> str:
    import zipfile
    from xml.etree import ElementTree

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sections = []
        for number, path in enumerate(_slide_paths(archive), start=1):
            slide = ElementTree.fromstring(archive.read(path))
            paragraphs = ["".join(run.text or "" for run in paragraph.iter(f"{_DRAWING_NS}t"))
                          for paragraph in slide.iter(f"{_DRAWING_NS}p")]
            text = "\n".join(line for line in paragraphs if line.strip())
            if text:
                sections.append(f"<!-- Slide number: {number} -->\n{text}")
        return "\n\n".join(sections)


@cache
def _html_parser_class() -> type[Any]:
    from html.parser import HTMLParser

    class _HtmlText(HTMLParser):
        """The visible text of a page: script, style and the head's metadata left out, block elements on lines."""

        _HIDDEN = {"script", "style", "noscript", "template", "head"}
        _BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table",
                   "ul", "ol", "pre", "blockquote", "title", "header", "footer"}

        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.hidden_depth = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in self._HIDDEN:
                self.hidden_depth += 1
            elif tag in self._BLOCKS:
                self.parts.append("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in self._HIDDEN:
                self.hidden_depth = max(0, self.hidden_depth - 1)
            elif tag in self._BLOCKS:
                self.parts.append("\n")

        def handle_data(self, data: str) -> None:
            if not self.hidden_depth:
                self.parts.append(data)

        def text(self) -> str:
            lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
            return "\n".join(line for line in lines if line)

    return _HtmlText


def _html(data: bytes) -> str:
    parser = _html_parser_class()()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    return parser.text()


# extension -> (the module its reader needs, or "" for the stdlib; the reader)
_READERS: dict[str, tuple[str, Reader]] = {
    ".pdf": ("pdfminer", _pdf),
    ".docx": ("mammoth", _docx),
    ".xlsx": ("openpyxl", _xlsx),
    ".pptx": ("", _pptx),
    ".html": ("", _html),
    ".htm": ("", _html),
}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def reader_for(extension: str) -> Reader | None:
    """The reader of files with this extension, or None when there is none or its library is not installed."""
    entry = _READERS.get(extension)
    if entry is None:
        return None
    module, reader = entry
    if module and not _installed(module):
        return None
    return reader
