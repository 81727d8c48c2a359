"""Report blocks -> one self-contained HTML page: CSS inline, figures embedded as base64 PNG, no scripts.

Self-contained so the page can be mailed, attached to an MLflow run or opened offline and still show
every figure.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence

from tlbench.report.document import Block, Bullets, Callout, Code, Figure, Heading, Paragraph, Table

_CSS = """
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2430; background: #fff; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.3em; margin-top: 2em; padding-bottom: 0.2em; border-bottom: 1px solid #d8dee8; }
h3 { font-size: 1.08em; margin-top: 1.5em; }
code { font: 0.9em ui-monospace, "DejaVu Sans Mono", monospace; background: #f2f4f8; padding: 0 3px;
       border-radius: 3px; }
pre { background: #f6f8fa; padding: 12px; overflow-x: auto; border-radius: 6px; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e7ee; padding: 5px 10px; vertical-align: top; }
th { background: #f3f5f9; text-align: left; border-bottom: 2px solid #c9d1de; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef7ee; }
.caption { color: #4a5568; font-size: 0.9em; margin: 4px 0 0; }
figure { margin: 18px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ee; border-radius: 4px; }
.callout { border-left: 4px solid #3b82f6; background: #eff5ff; padding: 8px 12px; margin: 12px 0;
           border-radius: 0 4px 4px 0; }
.callout.warning { border-color: #d97706; background: #fff7e8; }
nav.toc { background: #f7f8fb; border: 1px solid #e3e7ee; border-radius: 6px; padding: 6px 16px;
          display: inline-block; }
nav.toc ol { margin: 6px 0; padding-left: 20px; }
"""


def inline(text: str) -> str:
    """Escape, then turn ``**bold**`` and ```code``` into tags."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _table(table: Table) -> str:
    align = table.align or ("l",) * len(table.header)
    head = "".join(f'<th class="{a}">{inline(h)}</th>' for h, a in zip(table.header, align, strict=True))
    rows = []
    for index, row in enumerate(table.rows):
        best = ' class="best"' if index in table.highlight else ""
        cells = "".join(f'<td class="{a}">{inline(c)}</td>' for c, a in zip(row, align, strict=True))
        rows.append(f"<tr{best}>{cells}</tr>")
    caption = f'<p class="caption">{inline(table.caption)}</p>' if table.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{caption}"


def _figure(block: Figure, images: Mapping[str, bytes]) -> str:
    data = images.get(block.png)
    if data is None:
        return f'<div class="callout warning">Figure {inline(block.title)} could not be embedded.</div>'
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    notes = "".join(f'<p class="caption"><strong>Note:</strong> {inline(n)}</p>' for n in block.notes)
    width = f' width="{block.width}"' if block.width else ""
    return (
        f'<figure><img src="{src}"{width} alt="{html.escape(block.title)}">'
        f'<figcaption class="caption">{inline(block.caption)} '
        f'(also as <a href="{html.escape(block.svg)}">SVG</a>)</figcaption>{notes}</figure>'
    )


def _block(block: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{block.anchor}">{inline(block.text)}</h{block.level}>'
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Callout):
        label = "Warning" if block.kind == "warning" else "Note"
        return f'<div class="callout {block.kind}"><strong>{label}:</strong> {inline(block.text)}</div>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block, images)
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>"
    raise TypeError(f"unknown block {block!r}")


def _toc(blocks: Sequence[Block]) -> str:
    items = [
        f'<li><a href="#{b.anchor}">{inline(b.text)}</a></li>'
        for b in blocks
        if isinstance(b, Heading) and b.level == 2
    ]
    return f'<nav class="toc"><strong>Contents</strong><ol>{"".join(items)}</ol></nav>' if items else ""


def to_html(blocks: Sequence[Block], *, images: Mapping[str, bytes]) -> str:
    """``images`` maps each figure's PNG path to its bytes (embedded, so the page stands alone)."""
    title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), "tlbench report")
    body = [_block(block, images) for block in blocks]
    first_h2 = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level == 2), len(blocks))
    body.insert(first_h2, _toc(blocks))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title.replace('`', ''))}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body><main>\n{chr(10).join(body)}\n</main></body>\n</html>\n"
    )
