"""CSV cells that a spreadsheet would run as formulas are neutralised, reversibly."""

from __future__ import annotations

import pytest

from server.audit.export import escape_cell, unescape_cell


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+84 912 345 678", "'+84 912 345 678"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("'quoted", "''quoted"),
        ("Cụm loa thôn Nà Rị", "Cụm loa thôn Nà Rị"),
        ("", ""),
    ],
)
def test_formula_cells_are_escaped_and_read_back_unchanged(raw: str, written: str) -> None:
    assert escape_cell(raw) == written
    assert unescape_cell(escape_cell(raw)) == raw
