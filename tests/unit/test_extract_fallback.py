"""File understanding without markitdown (the cloud deployment's ExtractLayer): PDF, DOCX, XLSX, PPTX and HTML
are read by pdfminer.six, mammoth, openpyxl and the stdlib. markitdown is made unimportable in each test, so what
is checked is the fallback, on real documents made in the test."""

from __future__ import annotations

import io
import sys

import pytest

from isthmus.adapters import extract_markitdown
from isthmus.adapters.extract_markitdown import MarkitdownExtractor
from tests.support.documents import docx, scanned_pdf, text_pdf

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(autouse=True)
def no_markitdown(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import markitdown` raise ImportError, as on a gateway without it installed
    monkeypatch.setitem(sys.modules, "markitdown", None)
    monkeypatch.setattr(extract_markitdown, "_converter", None)


def _xlsx() -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Budget"
    sheet.append(["Team", "Quarter", "Spend"])
    sheet.append(["Falcon", "Q3", 1250])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    for title, body in (("Roadmap", "Ship the edge in March."), ("Risks", "The cache may run cold.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_without_markitdown_pdf_and_docx_text_comes_out() -> None:
    # given a PDF with a text layer and a DOCX, on a gateway without markitdown
    extractor = MarkitdownExtractor()
    # when they are extracted
    pdf = extractor.extract(text_pdf(["The launch code is PELICAN-42.", "Second line."]),
                            media_type="application/pdf", filename="launch.pdf")
    doc = extractor.extract(docx(["The meeting moved to Thursday.", "Bring the slides."]),
                            media_type=DOCX_TYPE, filename="")
    # then their text comes out, line by line, with no note
    assert pdf.text.splitlines() == ["The launch code is PELICAN-42.", "Second line."] and pdf.detail == ""
    assert [line for line in doc.text.splitlines() if line] == ["The meeting moved to Thursday.",
                                                                "Bring the slides."]
    assert doc.detail == ""
    # and markitdown was never loaded
    assert extract_markitdown._converter is None


def test_without_markitdown_a_scanned_pdf_gets_the_no_text_layer_note() -> None:
    result = MarkitdownExtractor().extract(scanned_pdf(), media_type="application/pdf", filename="scan.pdf")
    assert result.text == ""
    assert "no text layer" in result.detail and "scanned or image-only PDF" in result.detail


def test_without_markitdown_xlsx_pptx_and_html_are_read() -> None:
    extractor = MarkitdownExtractor()
    sheet = extractor.extract(_xlsx(), media_type="", filename="budget.xlsx")
    deck = extractor.extract(_pptx(), media_type="", filename="plan.pptx")
    page = extractor.extract(b"<html><head><title>T</title><style>p{color:red}</style></head><body>"
                             b"<h1>Notice</h1><p>Doors open at <b>nine</b> &amp; close at five.</p>"
                             b"<script>var secret = 1;</script></body></html>",
                             media_type="text/html", filename="notice.html")
    # the spreadsheet as a Markdown table per sheet
    assert sheet.text.splitlines() == ["## Budget", "", "| Team | Quarter | Spend |", "| --- | --- | --- |",
                                       "| Falcon | Q3 | 1250 |"]
    # the slides in order, each one's title and body
    assert deck.text == ("<!-- Slide number: 1 -->\nRoadmap\nShip the edge in March.\n\n"
                         "<!-- Slide number: 2 -->\nRisks\nThe cache may run cold.")
    # the page's visible text only
    assert page.text.splitlines() == ["Notice", "Doors open at nine & close at five."]


def test_without_markitdown_an_unsupported_or_broken_file_gets_its_note() -> None:
    extractor = MarkitdownExtractor()
    # an unsupported type: named, not guessed at
    epub = extractor.extract(b"PK\x03\x04 not really", media_type="application/epub+zip", filename="book.epub")
    assert epub.text == "" and epub.detail == "no extractor for .epub files is installed on this gateway"
    # a broken DOCX: its reason, not a 500
    broken = extractor.extract(b"not a zip", media_type=DOCX_TYPE, filename="broken.docx")
    assert broken.text == "" and broken.detail.startswith("its .docx content could not be read (")
    # and plain text is still read as it is
    notes = extractor.extract(b"remember the milk\n", media_type="text/plain", filename="notes.txt")
    assert notes.text == "remember the milk"


def test_a_format_whose_library_is_missing_gets_the_not_installed_note(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a gateway where pdfminer.six is not installed either
    monkeypatch.setitem(sys.modules, "pdfminer", None)
    result = MarkitdownExtractor().extract(text_pdf(["hello"]), media_type="application/pdf", filename="a.pdf")
    assert result.text == "" and result.detail == "no extractor for .pdf files is installed on this gateway"
