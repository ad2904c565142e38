"""Draw a verdict as one phone-readable PNG: the top-5 as bars, and each slice's vote along the clip.

`render_chart` is blocking (matplotlib's Agg canvas, no pyplot, no display): front ends call it with
`await asyncio.to_thread(render_chart, verdict)`. The text reply never depends on the image.
"""

from __future__ import annotations

import io
import math
import threading
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MultipleLocator

from classifier.model.verdict import GenreReport, TimelinePoint, Verdict
from classifier.model.voting import Candidate

__all__ = ["render_chart", "MAX_PNG_BYTES"]

MAX_PNG_BYTES = 10 * 1024 * 1024   # Telegram's photo limit; our charts are ~50 kB
_SIZE_IN, _DPI = (7.2, 7.2), 120   # 864 x 864 px: square survives phone crops and Telegram's 1280-px resize
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
_OTHER = "other"
_OTHER_COLOUR = "#b0b0b0"
_LABEL_CHARS = 22
# FreeType font objects are shared between figures and are not thread-safe: one chart at a time.
_lock = threading.Lock()


def render_chart(result: Verdict | GenreReport) -> bytes:
    """PNG bytes: the ranked candidates as horizontal bars (top) and the per-slice winners on a timeline.

    Parameters
    ----------
    result : a Verdict (artists) or a GenreReport (genres); its `timeline` holds each slice's (t, label)
    """
    identify = isinstance(result, Verdict)
    cands: Sequence[Candidate] = result.artists if identify else result.genres
    cands = tuple(cands)[:5]
    colours = {c.label: _COLOURS[i % len(_COLOURS)] for i, c in enumerate(cands)}
    with _lock:
        fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
        FigureCanvasAgg(fig)
        top, line = fig.subplots(2, 1, height_ratios=(1.15, 1.0))
        _bars(top, cands, colours, "Who made this?" if identify else "Genre")
        _timeline(line, result.timeline, [c.label for c in cands], colours, result.start, result.seconds)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    data = buf.getvalue()
    if len(data) > MAX_PNG_BYTES:  # pragma: no cover - a fixed-size figure cannot get there
        raise ValueError(f"chart is {len(data)} bytes")
    return data


def _short(label: str) -> str:
    """Cut long names in the middle: "An Artist Wi…Indeed A" keeps names that share a start apart."""
    if len(label) <= _LABEL_CHARS:
        return label
    head = (_LABEL_CHARS - 1) * 3 // 5
    return label[:head].rstrip() + "…" + label[-(_LABEL_CHARS - 1 - head):].lstrip()


def _bars(ax, cands: Sequence[Candidate], colours: dict[str, str], title: str) -> None:  # noqa: ANN001
    ax.set_title(title, fontsize=18, loc="left", fontweight="bold")
    if not cands:
        ax.text(0.5, 0.5, "no candidates", ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels = [_short(c.label) for c in cands][::-1]          # best on top
    values = [100 * max(0.0, min(1.0, c.score)) for c in cands][::-1]
    ys = list(range(len(values)))                            # positions, not categories: cut names may collide
    ax.barh(ys, values, color=[colours[c.label] for c in cands][::-1], height=0.65)
    ax.set_yticks(ys, labels)
    for y, v in enumerate(values):
        inside = v > 70
        ax.text(v - 2 if inside else v + 1.5, y, f"{v:.0f}%", va="center", ha="right" if inside else "left",
                fontsize=15, color="white" if inside else "#222222", fontweight="bold")
    ax.set_xlim(0, 100)
    ax.tick_params(axis="y", labelsize=15, length=0)
    ax.tick_params(axis="x", labelsize=11)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}%"))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _clock(seconds: float, _pos: object = None) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return ""
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _tick_step(span_s: float) -> float:
    """A clock-friendly tick step (5 s, 1 min, 15 min, ...) giving at most 7 ticks over `span_s`."""
    return next((float(s) for s in _STEPS_S if span_s / s <= 7), span_s / 6)


def _runs(points: Sequence[TimelinePoint]) -> list[tuple[str, float, float]]:
    """Consecutive slices with the same winner merged into (label, start, width): a 3-hour set stays light."""
    ts = [p.t for p in points]
    hops = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
    hop = hops[len(hops) // 2] if hops else 3.0
    runs: list[tuple[str, float, float]] = []
    for i, p in enumerate(points):
        width = hop if i + 1 == len(points) else max(0.0, min(ts[i + 1], p.t + hop) - p.t)
        if runs and runs[-1][0] == p.label and abs(runs[-1][1] + runs[-1][2] - p.t) < 1e-6:
            runs[-1] = (p.label, runs[-1][1], runs[-1][2] + width)
        else:
            runs.append((p.label, p.t, width))
    return runs


def _timeline(ax, points: Sequence[TimelinePoint], labels: list[str], colours: dict[str, str],  # noqa: ANN001
              start: float, seconds: float) -> None:
    ax.set_title("Each slice's vote along the clip", fontsize=15, loc="left")
    if not points:
        ax.text(0.5, 0.5, "no slices", ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.set_axis_off()
        return
    rows = list(labels)
    if any(p.label not in colours for p in points):
        rows.append(_OTHER)
    y_of = {label: len(rows) - 1 - i for i, label in enumerate(rows)}   # best on top, like the bars
    end = max(start + seconds, points[-1].t)
    segments: dict[str, list[tuple[float, float]]] = {}
    for label, t0, width in _runs(points):
        segments.setdefault(label if label in colours else _OTHER, []).append((t0, width))
    for key, spans in segments.items():          # one collection per row: a 3-hour set draws as fast as a clip
        ax.broken_barh(spans, (y_of[key] - 0.35, 0.7), facecolors=colours.get(key, _OTHER_COLOUR))
    ax.set_yticks([y_of[r] for r in rows], [_short(r) for r in rows], fontsize=13)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    lo = min(start, points[0].t)
    hi = max(end, lo + 1.0)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(MultipleLocator(_tick_step(hi - lo)))
    ax.xaxis.set_major_formatter(FuncFormatter(_clock))
    ax.tick_params(axis="x", labelsize=12)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
