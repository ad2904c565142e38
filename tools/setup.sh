#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system tools (ffmpeg, python venv), then .venv with the package.
# Idempotent. Installs system packages with apt-get when run as root or with passwordless sudo;
# otherwise says exactly what to install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)

PYTHON=""
for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)'; then
        PYTHON=$(command -v "$cand"); break
    fi
done
if [ -z "$PYTHON" ]; then
    echo "setup: Python 3.11 or 3.12 is required (found: $(python3 --version 2>&1 || echo none))." >&2
    exit 1
fi
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=("python3-venv")

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
    if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: missing system packages: ${need_apt[*]}" >&2
        echo "setup: install them (Debian/Ubuntu: sudo apt-get install ${need_apt[*]}) and run this again." >&2
        exit 1
    fi
    echo "setup: installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# TensorFlow for this machine: CPU wheels unless SPY_TF_EXTRA=gpu (a CUDA host).
.venv/bin/python -m pip install -q -e ".[${SPY_TF_EXTRA:-cpu},dev]"
# The pretrained checkpoints ship inside musicnn's wheel. Its declared pins (numpy<1.17, TF 1.x) must not
# be resolved: we use only its checkpoint files, never its code.
.venv/bin/python -m pip install -q --no-deps musicnn==0.1.0
# YouTube's JavaScript challenges: the Deno runtime (the `deno` wheel) and the solver scripts (yt-dlp's
# `default` extra) came with the package; check that yt-dlp can run them, so a broken install shows here.
if ! .venv/bin/spy about >/dev/null 2>&1; then
    .venv/bin/spy about >&2 || true
    echo "setup: yt-dlp's JavaScript runtime or ffmpeg is not usable (see above); YouTube links would fail." >&2
    exit 1
fi
echo "setup: ready ($(.venv/bin/python --version), ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3);" \
     "$(.venv/bin/spy about | sed -n 2p))"
