"""The terminal's rendering of answers (the JSON shape is the classifier's; this is for people)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_genre", "render_identify"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_genre(d: dict[str, Any]) -> str:
    lines = [f"{d['source']}  ·  {d['seconds']:.1f} s, {d['slices']} slices"]
    lines.append("Genres:      " + " · ".join(f"{g['label']} {_pct(g['score'])} ({g['votes']} vote{'' if g['votes'] == 1 else 's'})" for g in d["genres"]))
    lines.append("Descriptors: " + " · ".join(f"{g['label']} {_pct(g['score'])}" for g in d["descriptors"]))
    if d.get("hint"):
        lines.append(d["hint"])
    t = d["timings"]
    lines.append("Timings:     " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
    return "\n".join(lines)


def render_identify(d: dict[str, Any]) -> str:
    head = "I think this is:" if d["verdict"] == "identified" else "I don't know. The nearest (weak) candidates:"
    lines = [f"{d['source']}  ·  {d['seconds']:.1f} s, {d['slices']} slices", head]
    for i, a in enumerate(d["artists"], 1):
        lines.append(f"  {i}. {a['name']:<28} {_pct(a['score']):>4}  ({a['votes']}/{d['slices']} slices)")
    lines.append(f"Confidence:  {_pct(d['confidence'])} (vote share {_pct(d['vote_share'])})")
    if d["genres"]:
        lines.append("Genre:       " + " · ".join(f"{g['label']} {_pct(g['score'])}" for g in d["genres"][:3]))
    if d.get("hint"):
        lines.append(d["hint"])
    lines.append(f"Model:       {d['model']['id']} ({d['model']['artists']} artists)")
    lines.append("Timings:     " + ", ".join(f"{k} {v:.2f} s" for k, v in d["timings"].items()))
    return "\n".join(lines)
