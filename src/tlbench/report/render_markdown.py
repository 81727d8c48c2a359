"""Report blocks -> Markdown (GitHub flavour: pipe tables, figures as relative PNG links)."""

from __future__ import annotations

from collections.abc import Sequence

from tlbench.report.document import Block, Bullets, Callout, Code, Figure, Heading, Paragraph, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> str:
    align = table.align or ("l",) * len(table.header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [
        "| " + " | ".join(_cell(h) for h in table.header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows),
    ]
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return "\n".join(lines)


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Callout):
        return f"> **{'Warning' if block.kind == 'warning' else 'Note'}:** {block.text}"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        lines = [f"![{block.title}]({block.png})", "", f"*{block.caption}* ([SVG]({block.svg}))"]
        lines += [f"\n> {note}" for note in block.notes]
        return "\n".join(lines)
    if isinstance(block, Code):
        return f"```{block.language}\n{block.text.rstrip()}\n```"
    raise TypeError(f"unknown block {block!r}")


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(_block(b) for b in blocks) + "\n"
