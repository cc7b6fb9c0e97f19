"""One self-contained HTML report: inline CSS, inline SVG figures, no scripts, no external resources."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from reports.layout import SUPPRESSED, Table

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 70em;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.8em; text-align: right; white-space: nowrap; }
th.l, td.l { text-align: left; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
tr.pooled td { font-weight: bold; }
tr.first-pooled td { border-top: 1px solid #222; }
td.suppressed { color: #777; font-style: italic; }
p.note { font-size: 0.8em; color: #555; margin: 0.1em 0; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #444; }
"""

_HEADER = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", re.DOTALL)
_REFS = re.compile(r'(id="|href="#|url\(#)([^")]+)')


@dataclass
class Figure:
    """An SVG document (as written to disk) and its caption."""

    svg: str
    caption: str


@dataclass
class Section:
    heading: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def inline_svg(svg: str, prefix: str) -> str:
    """The SVG without its XML prolog, with ids prefixed so several figures can share one page."""
    body = _HEADER.sub("", svg).strip()
    ids = set(re.findall(r'id="([^"]+)"', body))

    def rename(m: re.Match[str]) -> str:
        return m.group(1) + (f"{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(2))

    return _REFS.sub(rename, body)


def _cls(col: int, text: str, left: int) -> str:
    names = (["l"] if col < left else []) + (["suppressed"] if text == SUPPRESSED else [])
    return f' class="{" ".join(names)}"' if names else ""


def table_html(table: Table) -> str:
    """A table with a caption, summary rows in bold, and its footnotes under it."""
    head = "".join(f"<th{_cls(j, h, table.left)}>{escape(h)}</th>" for j, h in enumerate(table.header))
    body = []
    for i, row in enumerate(table.rows):
        classes = []
        if table.pooled_from is not None and i >= table.pooled_from:
            classes.append("pooled" + (" first-pooled" if i == table.pooled_from else ""))
        cells = "".join(f"<td{_cls(j, c, table.left)}>{escape(c)}</td>" for j, c in enumerate(row))
        cls = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in table.footnotes)
    return (
        f'<h3 id="{escape(table.key)}">{escape(table.title)}</h3>\n'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n{notes}\n"
    )


def figure_html(fig: Figure, prefix: str) -> str:
    return f"<figure>{inline_svg(fig.svg, prefix)}<figcaption>{escape(fig.caption)}</figcaption></figure>\n"


def html_document(title: str, intro: Sequence[str], sections: Sequence[Section], methods: Sequence[str]) -> str:
    """The whole report as one HTML string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request, so no console error for a missing one
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        *[f"<p>{escape(p)}</p>" for p in intro],
    ]
    n_fig = 0
    for section in sections:
        parts.append(f"<h2>{escape(section.heading)}</h2>")
        parts += [table_html(t) for t in section.tables]
        for fig in section.figures:
            n_fig += 1
            parts.append(figure_html(fig, f"fig{n_fig}"))
    parts.append("<h2>Methods</h2>")
    parts += [f"<p>{escape(p)}</p>" for p in methods]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
