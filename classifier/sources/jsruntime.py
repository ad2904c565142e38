"""YouTube's JavaScript challenge: which runtime and solver scripts yt-dlp uses, and whether they are there.

Most YouTube formats now come only after yt-dlp solves a challenge written in JavaScript, with the solver
scripts of `yt-dlp-ejs` (yt-dlp's `default` extra) run by a JavaScript runtime (Deno, from the `deno`
wheel). Both are installed with the package; `ydl_options` names the runtime's path explicitly and allows
no remote components, so yt-dlp never downloads a solver from npm or GitHub at run time.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FetchTools", "about", "runtime_path", "ydl_js_options", "RUNTIME"]

log = logging.getLogger(__name__)

RUNTIME = "deno"


@dataclass(frozen=True, slots=True)
class FetchTools:
    """What `spy about` and `/about` report about fetching."""

    ytdlp_version: str
    solver_version: str | None        # yt-dlp-ejs, the challenge-solver scripts; None if not installed
    runtime: str                      # "deno"
    runtime_path: str | None          # None: not found
    runtime_version: str | None
    runtime_ok: bool                  # found, runs, and a version yt-dlp supports

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: `yt-dlp 2026.10.26; YouTube challenges: deno 2.9.8 with yt-dlp-ejs 0.8.0`."""
        if self.runtime_ok and self.solver_version:
            js = f"{self.runtime} {self.runtime_version} with yt-dlp-ejs {self.solver_version}"
        elif not self.runtime_ok:
            where = f" at {self.runtime_path}" if self.runtime_path else ""
            js = f"NO JavaScript runtime ({self.runtime} not usable{where}): most YouTube formats will fail"
        else:
            js = "NO challenge-solver scripts (yt-dlp-ejs): most YouTube formats will fail"
        return f"yt-dlp {self.ytdlp_version}; YouTube challenges: {js}"


def runtime_path(configured: str = "") -> str | None:
    """The runtime binary: `configured` (a file, or a folder holding `deno`), else the one the `deno` wheel
    installed, else `deno` on PATH; None when there is none."""
    if configured:
        path = os.path.join(configured, RUNTIME) if os.path.isdir(configured) else configured
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return _installed()


@functools.cache
def _installed() -> str | None:
    try:
        import deno

        return str(deno.find_deno_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which(RUNTIME)


def ydl_js_options(configured: str = "") -> dict[str, Any]:
    """yt-dlp parameters: the runtime by path, and no remote components (no solver fetched at run time)."""
    path = runtime_path(configured)
    if path is None:
        log.warning("no JavaScript runtime found (%s): YouTube fetches will get few or no formats",
                    configured or "the deno package is not installed")
    return {"js_runtimes": {RUNTIME: {"path": path} if path else {}}, "remote_components": []}


def about(configured: str = "") -> FetchTools:
    """yt-dlp's version and the challenge runtime's status, checked the way yt-dlp checks it (runs `--version`)."""
    import yt_dlp.version  # importing yt_dlp registers its runtimes in supported_js_runtimes
    from yt_dlp.globals import supported_js_runtimes

    path = runtime_path(configured)
    version, ok = None, False
    runtime_cls = supported_js_runtimes.value.get(RUNTIME)
    if path is not None and runtime_cls is not None:
        info = runtime_cls(path=path).info
        if info is not None:
            version, ok = info.version, bool(info.supported)
    try:
        solver: str | None = importlib.metadata.version("yt-dlp-ejs")
    except importlib.metadata.PackageNotFoundError:
        solver = None
    return FetchTools(ytdlp_version=yt_dlp.version.__version__, solver_version=solver, runtime=RUNTIME,
                      runtime_path=path or (configured or None), runtime_version=version, runtime_ok=ok)
