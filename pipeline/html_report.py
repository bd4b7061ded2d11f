"""What the HTML reports share: the jinja2 environment on ``pipeline/templates/``, matplotlib figures drawn
without pyplot and saved as PNG files, and the formatting of numbers and table cells.

The templates lay out plain data (dicts, lists, strings, numbers) that the report modules prepare;
autoescaping is on, so every string a user supplied (file, dataset and clip names) is escaped.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from scatterbird.pipeline.output_files import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEMPLATES = Path(__file__).resolve().parent / "templates"


def fixed(x: float | None, nd: int = 3) -> str:
    """``x`` with ``nd`` decimals; an em dash for a missing value (None or NaN)."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def cell(v: Any) -> str:
    """A table cell: floats to 4 significant digits, ``{"mean": m, ...}`` as ``m``, lists joined by commas,
    ``-`` for None."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.4g}" if v["mean"] is not None else "-"
    if isinstance(v, list):
        return ", ".join(cell(x) for x in v)
    return str(v) if v is not None else "-"


def table(rows: list[dict], keys: list[str]) -> dict[str, Any]:
    """The data of a plain table: ``{"head": keys, "rows": [[cell, ...], ...]}``, one row a dict."""
    return {"head": list(keys), "rows": [[cell(r.get(k)) for k in keys] for r in rows]}


def written_at() -> str:
    """The current time as a report states when it was written (UTC, to the minute)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENV.filters["fixed"] = fixed


def render(template: str, path: str | os.PathLike, **context: Any) -> Path:
    """Render ``template`` (a file of ``pipeline/templates/``) with ``context`` into ``path`` (UTF-8)."""
    return write_text_atomic(path, ENV.get_template(template).render(**context))  # whole or not at all


def new_figure(w: float, h: float) -> Figure:
    """A matplotlib figure of ``w`` x ``h`` inches on its own Agg canvas: no display, and the pyplot backend
    of the calling process is left alone."""
    # matplotlib is imported only when a figure is drawn: every worker process would carry it otherwise.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 90) -> None:
    """Write ``fig`` to ``path`` as a PNG image."""
    fig.savefig(path, dpi=dpi, format="png")
