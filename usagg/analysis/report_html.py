"""report.html rendered from report.md by markdown-it-py (CommonMark plus tables), not assembled by hand.

Raw HTML stays off (`html=False`): a tag in a task name shows as text, never as markup (report.md escapes them
as well, usagg/analysis/render.py `md_text`). On top of the plain rendering: an id on every heading (the contents
links), tables inside a box that scrolls sideways on a phone, and each figure (an image paragraph followed by its
`*name*: caption` paragraph) as a <figure> whose PNG is embedded, so the page is self-contained, displayed at the
full width of a phone and linked to the PNG in figures/ for its full size.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Iterable
from pathlib import Path

#: Wider than a phone at 390 px: a figure never shows smaller than this on a wider screen.
MIN_SHOWN_PX = 600

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:normal}
th{border-bottom:2px solid #555}td[style*="right"]{font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{display:block;width:100%;height:auto}figcaption{font-size:13px;color:#444}
code{background:#f4f4f4;padding:0 3px}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px;max-height:24em}pre code{background:none}
.warn{color:#a00;font-weight:bold}
@media (max-width:600px){body{margin:1em auto;padding:0 .6em}}
"""


def anchor(title: str) -> str:
    """The id of a heading, which the contents links point at."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, None for anything else."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def _parser():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("table_open", lambda *_: '<div class="scroll"><table>\n')
    md.add_render_rule("table_close", lambda *_: "</table></div>\n")
    # an image that is not one of the report's figures (Markdown in a name) shows as its text, loading nothing
    md.add_render_rule("image", lambda self, tokens, idx, *_: html.escape(tokens[idx].content))
    return md


def _figure(image, caption, folder: Path, dpi: int, md, env: dict) -> str:
    """One <figure>: the PNG embedded as a data URI, shown at full width up to 1.4 x its print size (at least
    MIN_SHOWN_PX), linked to its file, with the caption rendered inline."""
    rel = image.attrGet("src")
    path = folder / rel
    name = html.escape(image.content)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = png_size(path)
    shown = "" if size is None else f' style="max-width:{max(MIN_SHOWN_PX, round(size[0] * 96 / dpi * 1.4))}px"'
    dims = "" if size is None else f' width="{size[0]}" height="{size[1]}"'
    text = md.renderer.render(caption.children, md.options, env)
    return (
        f'<figure id="{name}"><a href="{html.escape(rel)}">'
        f'<img alt="{name}"{dims}{shown} src="data:image/png;base64,{data}"></a>'
        f"<figcaption>{text}</figcaption></figure>\n"
    )


def render_page(title: str, markdown: str, folder: Path, figures: Iterable[Path], dpi: int) -> str:
    """The whole HTML page of `markdown` (report.md); images whose path is one of `figures` become embedded figures,
    any other image shows as its alt text."""
    md = _parser()
    env: dict = {}
    tokens = md.parse(markdown, env)
    ours = {Path(p).resolve() for p in figures}
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            tok.attrSet("id", anchor(tokens[i + 1].content))
        elif tok.type == "list_item_open" and i + 2 < len(tokens) and tokens[i + 2].content.startswith("RANDOM INIT"):
            tok.attrSet("class", "warn")
    out, i = [], 0
    while i < len(tokens):
        kids = tokens[i + 1].children if tokens[i].type == "paragraph_open" and i + 1 < len(tokens) else None
        lone = kids[0] if kids and len(kids) == 1 and kids[0].type == "image" else None
        if lone is not None and (folder / str(lone.attrGet("src"))).resolve() in ours:
            caption = tokens[i + 4] if i + 5 < len(tokens) and tokens[i + 3].type == "paragraph_open" else None
            if caption is not None and caption.children and caption.children[0].type == "em_open":
                out.append(_figure(lone, caption, folder, dpi, md, env))
                i += 6
                continue
        j = _close(tokens, i) if tokens[i].nesting == 1 else i  # one top-level block at a time
        out.append(md.renderer.render(tokens[i : j + 1], md.options, env))
        i = j + 1
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n" + "".join(out) + "</body></html>\n"
    )


def _close(tokens: list, i: int) -> int:
    """Index of the token closing the block `tokens[i]` opens."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1
