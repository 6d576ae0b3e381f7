"""Small HTML pieces shared by the evaluation report and the IHC triage report."""

from __future__ import annotations


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain <table>: one header row, then `rows` (cells are already-escaped HTML)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
