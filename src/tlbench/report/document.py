"""The report as a list of plain blocks, rendered to Markdown and to HTML by separate functions.

Text may carry two inline marks, ``**bold**`` and ```code```, which both renderers understand; every
other character is literal (the HTML renderer escapes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.text.lower()).strip("-")


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Callout:
    """A note the reader must not miss (missing data, a figure not in this study)."""

    text: str
    kind: str = "note"  # note | warning


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...] = ()  # "l" | "r" per column; default left
    caption: str = ""
    highlight: tuple[int, ...] = ()  # rows to emphasise (the best per data size)


@dataclass(frozen=True)
class Figure:
    title: str
    png: str  # path relative to the report directory
    svg: str
    caption: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    width: int = 0  # CSS pixels at the figure's print size (inches x 96), so all figures share one scale


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


Block = Heading | Paragraph | Bullets | Callout | Table | Figure | Code
