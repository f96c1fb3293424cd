"""A self-contained HTML report: sections of text, pictures, tables and evaluation reports.

Pictures are embedded as ``data:`` URIs and the style sheet is inline, so the single file opens
offline, can be mailed, and never points at a server. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsvl.utils.atomic import write_text

__all__ = ["HtmlReport"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #2a6; padding-bottom: .3em; }
h2 { margin-top: 2em; color: #264; }
table { border-collapse: collapse; margin: .8em 0; }
caption { caption-side: top; text-align: left; white-space: nowrap; font-weight: 600; padding: .2em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; font-size: 0.92em; }
th { background: #eef5ef; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #aaa; }
figcaption { font-size: .85em; color: #555; max-width: 520px; }
.note { color: #755; font-style: italic; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


@dataclass
class HtmlReport:
    """Build with the ``add_*`` methods, then :meth:`write` (atomic)."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def image(self, path: str | os.PathLike[str], caption: str = "") -> None:
        """Embed a picture file (PNG/JPEG) with a caption."""
        file = Path(path)
        mime = mimetypes.guess_type(file.name)[0] or "image/png"
        data = base64.b64encode(file.read_bytes()).decode("ascii")
        self.parts.append(
            f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption or file.name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, caption: str = "") -> None:
        """A table of dict rows (columns: the given ones, else the first row's keys)."""
        if not rows:
            self.paragraph(f"{caption}: no rows" if caption else "no rows", note=True)
            return
        cols = list(columns or rows[0].keys())
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def evaluation(self, report: Any, caption: str = "") -> None:
        """An :class:`~rsvl.metrics.report.EvalReport`: its numbers, then the protocol that made them."""
        metrics = [{"metric": k, "value": v} for k, v in report.metrics.items() if isinstance(v, (int, float))]
        self.table(metrics, ["metric", "value"], caption or f"{report.task} ({report.preset})")
        from rsvl.metrics.report import protocol_summary

        rows = [{"setting": k, "value": v} for k, v in protocol_summary(report.protocol).items()]
        self.table(rows, ["setting", "value"], "protocol (eval.json / summary.json keep it whole)")

    def render(self) -> str:
        title = html.escape(self.title)
        body = "\n".join(self.parts)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page atomically and return its path."""
        target = Path(path)
        write_text(target, self.render())
        return target
