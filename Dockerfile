# syntax=docker/dockerfile:1
# Deep House Spy images: one file, three targets (compose.yaml builds them; docs/deployment.md explains them).
#
#   docker build --target bot            -t deep-house-spy:bot .             chat bots; no TensorFlow, so they
#                                                                             need CLASSIFIER_URL (a `spy serve`)
#   docker build --target classifier     -t deep-house-spy:classifier .      `spy serve` on CPU (tensorflow-cpu)
#   docker build --target classifier-gpu -t deep-house-spy:classifier-gpu .  `spy serve` with TensorFlow's CUDA
#                                                                             wheels: needs only the host's NVIDIA
#                                                                             driver and container toolkit
#
# Every image runs as uid 10001, keeps its state (SQLite index, trained artist models) in the volume at
# /srv/spy/data and has no secret in it: tokens come from the environment at run time (.env, a k8s Secret).
# The pretrained backbone weights ship inside the pinned musicnn wheel and so are part of the classifier
# images; the artist model is trained by the operator and lives on the volume.

# python:3.11.14-slim-bookworm (Debian 12), pinned by digest. To move on: change tag and digest together.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- common to every stage ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 spy \
 && useradd --system --uid 10001 --gid spy --home-dir /srv/spy --no-create-home --shell /usr/sbin/nologin spy

# --- dependencies, one stage per flavour; the source comes last so code edits reuse these layers --------------
FROM base AS deps
RUN python -m venv /opt/venv
WORKDIR /srv/spy/app
COPY pyproject.toml README.md ./
# pyproject.toml's dependency lists, without the package itself (which needs the source), one file per flavour:
# requirements-bot.txt (no extra), requirements-cpu.txt (the cpu extra), requirements-gpu.txt (the gpu extra).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
[open(f'requirements-{n}.txt', 'w').write('\n'.join(p['dependencies'] + p['optional-dependencies'].get(n, []))) \
 for n in ('bot', 'cpu', 'gpu')]"

FROM deps AS deps-bot
RUN pip install -r requirements-bot.txt

FROM deps AS deps-cpu
# musicnn is installed only for its checkpoint files; its pins (TF 1.x, numpy<1.17) must not be resolved.
RUN pip install -r requirements-cpu.txt \
 && pip install --no-deps musicnn==0.1.0

FROM deps AS deps-gpu
RUN pip install -r requirements-gpu.txt \
 && pip install --no-deps musicnn==0.1.0

# The package itself, a normal (non-editable) install into /opt/venv: the model files (models/) travel inside it
# as package data, so the runtime images need /opt/venv only, not the source.
FROM deps-bot AS app-bot
COPY classifier ./classifier
COPY bot ./bot
COPY spy ./spy
COPY models ./models
RUN pip install --no-deps .

FROM deps-cpu AS app-cpu
COPY classifier ./classifier
COPY bot ./bot
COPY spy ./spy
COPY models ./models
RUN pip install --no-deps .

FROM deps-gpu AS app-gpu
COPY classifier ./classifier
COPY bot ./bot
COPY spy ./spy
COPY models ./models
RUN pip install --no-deps .

# --- runtime: what the three targets share ---------------------------------------------------------------------
FROM base AS runtime
# Caches that libraries write go to /tmp, so the root filesystem can be mounted read-only (k8s manifests).
ENV SPY_DATA_DIR=/srv/spy/data \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/tmp/.matplotlib \
    NUMBA_CACHE_DIR=/tmp/.numba \
    DENO_DIR=/tmp/.deno \
    DENO_NO_UPDATE_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /srv/spy
RUN mkdir -p /srv/spy/data && chown spy:spy /srv/spy/data
VOLUME ["/srv/spy/data"]
ENTRYPOINT ["spy"]

FROM runtime AS runtime-ffmpeg
# ffmpeg decodes every upload and fetched window. Debian 12's package, updated when the image is rebuilt:
# pinning its exact version would break the build as soon as Debian ships a security fix.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

# --- target: the chat bots ---------------------------------------------------------------------------------------
# No TensorFlow and no ffmpeg: with CLASSIFIER_URL set the bots upload audio to the classifier and never decode.
FROM runtime AS bot
COPY --from=app-bot /opt/venv /opt/venv
ENV CLASSIFIER_URL=http://classifier:8080
USER 10001:10001
CMD ["bot"]

# --- target: the classifier service on CPU ------------------------------------------------------------------------
FROM runtime-ffmpeg AS classifier
COPY --from=app-cpu /opt/venv /opt/venv
# YouTube needs a JavaScript runtime and yt-dlp's solver scripts (both from pip): fail the build without them.
RUN ["spy", "about"]
# The service binds beyond loopback only with CLASSIFIER_TOKEN set (it refuses to start otherwise).
ENV SPY_SERVE_HOST=0.0.0.0 \
    SPY_SERVE_PORT=8080
EXPOSE 8080
USER 10001:10001
# /healthz: the process answers; /readyz: the networks are loaded and warm. Healthy means both.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; [u.urlopen('http://127.0.0.1:%s%s' % (os.environ.get('SPY_SERVE_PORT', '8080'), p), timeout=4) for p in ('/healthz', '/readyz')]"]
CMD ["serve"]

# --- target: the classifier service on an NVIDIA GPU --------------------------------------------------------------
FROM runtime-ffmpeg AS classifier-gpu
COPY --from=app-gpu /opt/venv /opt/venv
# YouTube needs a JavaScript runtime and yt-dlp's solver scripts (both from pip): fail the build without them.
RUN ["spy", "about"]
# tensorflow[and-cuda] brings CUDA and cuDNN as wheels; the NVIDIA container toolkit adds the host's driver.
# Growing GPU memory on demand lets TF Serving or a second replica share the card.
ENV SPY_SERVE_HOST=0.0.0.0 \
    SPY_SERVE_PORT=8080 \
    SPY_MAX_BATCH_SIZE=256 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TF_FORCE_GPU_ALLOW_GROWTH=true
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; [u.urlopen('http://127.0.0.1:%s%s' % (os.environ.get('SPY_SERVE_PORT', '8080'), p), timeout=4) for p in ('/healthz', '/readyz')]"]
CMD ["serve"]
