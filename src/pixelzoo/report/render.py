"""A tiny document model and its two renderings: self-contained HTML and GitHub Markdown.

The report is assembled once as a list of :class:`Section` and rendered twice, so the HTML page and the
Markdown twin cannot disagree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pixelzoo.report.figures import Figure


@dataclass(frozen=True)
class Cell:
    """Table cell: text, an optional link, a CSS class (``notrun``, ``stale``, ``cited``, ``better``...)."""

    text: str
    href: str | None = None
    cls: str = ""
    title: str | None = None
    links: tuple[tuple[str, str | None], ...] = ()  # extra (text, href) parts after ``text``
    fig: Figure | None = None  # an image shown in the cell (after the text)


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    note: str = ""


@dataclass
class Banner:
    """A highlighted box at the top: what produced the page and how far to trust its numbers."""

    title: str
    lines: list[str]
    warn: bool = False


@dataclass
class Details:
    """Blocks folded away by default (``<details>``): present, but out of the reader's way."""

    summary: str
    blocks: list[Any]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Any] = field(default_factory=list)  # paragraph, Table, figure row, Banner, Details


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1400px;padding:0 1em;color:#1b1b1b;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 .3em;font-size:.85em}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #d0d0d0;padding:.25em .5em;vertical-align:top}
th{background:#f0f3f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc}
.notrun{color:#8a8a8a;font-style:italic;white-space:nowrap}
.cited{color:#555}.stale{background:#fff3cd !important}
.lineage.stale{font-weight:600}.better{color:#116329}.worse{color:#a40e26}.lineage{font-size:.8em;color:#444}
.note{font-size:.85em;color:#444;margin:.2em 0 1em}
.figs{display:flex;flex-wrap:wrap;gap:1em;margin:.6em 0}
figure{margin:0}img{image-rendering:pixelated;border:1px solid #ddd;max-width:none;vertical-align:middle}
figcaption{font-size:.8em;color:#444;max-width:520px}nav a{margin-right:1em}
td.img{background:#fff !important}
.banner{border:2px solid #3b6ea8;background:#eef4fb;padding:.6em 1em;margin:1em 0}
.banner.warn{border-color:#b8860b;background:#fff8e1}.banner h2{margin:0 0 .3em;border:0;font-size:1.1em}
.banner p{margin:.2em 0}details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
.ok{color:#116329;font-weight:600}.fail{color:#a40e26;font-weight:600}
"""


def _html_link(text: str, href: str | None) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>' if href else html.escape(text)


def _html_img(f: Figure) -> str:
    """Shown at its natural size (set in the PNG, already nearest-upscaled): width/height pin the layout."""
    size = f' width="{f.width}" height="{f.height}"' if f.width and f.height else ""
    unit = f' data-unit="{f.unit_px}"' if f.unit_px else ""
    return f'<img src="{html.escape(f.path)}" alt="{html.escape(f.caption)}"{size}{unit}>'


def _html_cell(c: Cell, tag: str = "td") -> str:
    text = " · ".join(_html_link(t, h) for t, h in ((c.text, c.href), *c.links) if t)
    if c.fig is not None:
        text += ("<br>" if text else "") + _html_img(c.fig)
    cls = " ".join(x for x in (c.cls, "img" if c.fig is not None else "") if x)
    attrs = f' class="{cls}"' if cls else ""
    if c.title:
        attrs += f' title="{html.escape(c.title)}"'
    return f"<{tag}{attrs}>{text}</{tag}>"


def _html_block(b: Any) -> str:
    if isinstance(b, str):
        return f"<p>{html.escape(b)}</p>"
    if isinstance(b, Banner):
        lines = "".join(f"<p>{html.escape(x)}</p>" for x in b.lines)
        return f'<div class="banner{" warn" if b.warn else ""}"><h2>{html.escape(b.title)}</h2>{lines}</div>'
    if isinstance(b, Details):
        inner = "\n".join(_html_block(x) for x in b.blocks)
        return f"<details><summary>{html.escape(b.summary)}</summary>\n{inner}\n</details>"
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
        body = "\n".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in b.rows)
        cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
        note = f'<p class="note">{html.escape(b.note)}</p>' if b.note else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>{note}"
    figs = "".join(
        f"<figure>{_html_img(f)}<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in b
    )
    return f'<div class="figs">{figs}</div>'


def to_html(title: str, intro: list[Any], sections: list[Section]) -> str:
    """The whole page: inline CSS, no scripts, no network; images by relative path."""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(_html_block(p) for p in intro),
        f"<nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        parts.extend(_html_block(b) for b in s.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_text(text: str) -> str:
    """Text for Markdown: HTML in it is shown, never interpreted (GitHub renders raw HTML in Markdown)."""
    return html.escape(text, quote=False)


def _md_escape(text: str) -> str:
    # Backslash first; brackets and backticks would open a link or code span inside a name.
    for ch in ("\\", "`", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_target(href: str) -> str:
    """A link or image target: every character that could end it or start markup percent-encoded
    (spaces, parentheses, angle brackets, quotes), so a name in a path stays one target."""
    return quote(href, safe="/:#?&=%.-_~@!$*+,;")


def _md_link(text: str, href: str | None) -> str:
    return f"[{_md_escape(text)}]({_md_target(href)})" if href else _md_escape(text)


def _md_img(f: Figure) -> str:
    return f"![{_md_escape(f.caption)}]({_md_target(f.path)})"


def _md_cell(c: Cell) -> str:
    text = _md_link(c.text, c.href)
    classes = c.cls.split()
    if c.text and "notrun" in classes:
        text = f"*{text}*"
    elif c.text and "stale" in classes:
        text = f"**{text}** ⚠"
    parts = [p for p in (text, *(_md_link(t, h) for t, h in c.links if t)) if p]
    return " · ".join(parts) + (("<br>" if parts else "") + _md_img(c.fig) if c.fig is not None else "")


def _md_block(b: Any) -> str:
    if isinstance(b, str):
        return _md_text(b)
    if isinstance(b, Banner):
        return "\n".join([f"> **{_md_escape(b.title)}**", *(f"> {_md_text(x)}  " for x in b.lines)])
    if isinstance(b, Details):
        inner = "\n\n".join(_md_block(x) for x in b.blocks)
        return f"<details><summary>{html.escape(b.summary)}</summary>\n\n{inner}\n\n</details>"
    if isinstance(b, Table):
        lines = [f"**{_md_escape(b.caption)}**", ""] if b.caption else []
        lines.append("| " + " | ".join(_md_escape(h) for h in b.header) + " |")
        lines.append("|" + "---|" * len(b.header))
        lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows)
        if b.note:
            lines += ["", f"_{_md_text(b.note)}_"]
        return "\n".join(lines)
    return "\n\n".join(f"{_md_img(f)}  \n*{_md_escape(f.caption)}*" for f in b)


def to_markdown(title: str, intro: list[Any], sections: list[Section]) -> str:
    """The Markdown twin of :func:`to_html` (GitHub-flavoured tables, relative image links)."""
    nav = " · ".join(f"[{_md_escape(s.title)}](#{s.anchor})" for s in sections)
    parts = [f"# {_md_text(title)}", *(_md_block(p) for p in intro), nav]
    for s in sections:
        parts.append(f'<a id="{html.escape(s.anchor)}"></a>\n\n## {_md_text(s.title)}')
        parts.extend(_md_block(b) for b in s.blocks)
    return "\n\n".join(parts) + "\n"
