"""`spy about`: versions and whether what fetching needs is installed (yt-dlp, YouTube's JS runtime, ffmpeg)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
from typing import Any

from classifier.settings import Settings

__all__ = ["register", "collect"]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ffmpeg() -> str | None:
    path = shutil.which("ffmpeg")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.split()
    return words[2] if len(words) > 2 and words[0] == "ffmpeg" else "unknown"


def collect(settings: Settings) -> dict[str, Any]:
    """Everything `spy about` reports, cheaply: no TensorFlow import, no network."""
    from classifier.sources.jsruntime import about

    tools = about(settings.js_runtime_path)
    return {
        "spy": _version("deep-house-spy"),
        "python": platform.python_version(),
        "ytdlp": tools.to_dict(),
        "youtube_ready": tools.runtime_ok and tools.solver_version is not None,
        "ffmpeg": _ffmpeg(),
        "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
        "classifier": settings.classifier_url or "in-process",
    }


def cmd_about(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.sources.jsruntime import FetchTools

    d = collect(settings)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(f"Deep House Spy {d['spy']} (Python {d['python']})")
        print(FetchTools(**d["ytdlp"]).summary())
        if d["ytdlp"]["runtime_path"]:
            print(f"JavaScript runtime: {d['ytdlp']['runtime_path']}")
        print(f"ffmpeg {d['ffmpeg'] or 'NOT FOUND: no link or file can be read'}; TensorFlow {d['tensorflow']}")
        print(f"Classifier: {d['classifier']}")
    # Non-zero when links cannot work, so an image's health check or CI can say so.
    return 0 if d["youtube_ready"] and d["ffmpeg"] else 1


def register(sub: Any) -> None:
    sp = sub.add_parser("about", help="versions, and whether YouTube's JavaScript runtime and ffmpeg are there")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_about)
