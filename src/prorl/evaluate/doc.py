"""The report's document builder: the same content accumulated as HTML and as Markdown."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence


class Doc:
    """Accumulates the same content as HTML and as Markdown."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"\n{'#' * level} {text}\n")

    def para(self, text: str, cls: str = "") -> None:
        attr = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md.append(f"{text}\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = []
        for row in rows:
            cells = []
            for cell in row:
                num = cell[:1].isdigit() or cell[:1] in "+-"
                cls = f' class="{cell}"' if cell in ("diminish", "plateau", "sustained") else ""
                cls = ' class="muted"' if cell == "unsolved" else cls  # no verdict
                cls = ' class="num"' if num and not cls else cls
                cells.append(f"<td{cls}>{html.escape(cell)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.html.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
        md_rows = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        md_rows += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        self.md.append("\n".join(md_rows) + "\n")

    def images(self, pngs: Sequence[tuple[str, bytes]]) -> None:
        figs = [
            f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}"></figure>'
            for alt, png in pngs
        ]
        self.html.append('<div class="grid">' + "".join(figs) + "</div>")
