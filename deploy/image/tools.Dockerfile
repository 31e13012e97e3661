# The immich-backup tools image: the kubectl plugin's commands (`kubectl immich-backup …`, the monthly restore
# drill CronJob of deploy/overlays/drill) with the Kubernetes client, on a distroless Python 3.11 base. No
# shell, no package manager, no Textual app, no sandbox.
#
# Build from the repository root (the build context; BuildKit reads deploy/image/tools.Dockerfile.dockerignore):
#   docker build -f deploy/image/tools.Dockerfile -t ghcr.io/immich-offsite-backup/immich-backup:0.1.0 .
#
# Both bases are pinned by tag; pin them by digest for reproducible builds (deploy/image/README.md):
#   --build-arg BUILDER_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot@sha256:<digest>
# The builder must stay on Python 3.11 / Debian 12 to match the runtime's /usr/bin/python3.11 (3.11.2).

ARG BUILDER_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies first (own layer, cached until the lock changes): wheels only, every file hash-checked,
# nothing resolved beyond the lock. --target gives a plain directory that the runtime puts on PYTHONPATH.
COPY deploy/image/tools-requirements.txt /tmp/requirements.txt
RUN python -m pip install --require-hashes --no-deps --only-binary=:all: --no-compile \
        --target /app/site -r /tmp/requirements.txt \
    && rm -rf /app/site/bin

# The plugin's modules and the engine they call (S3 reads, restore, verification). Not the Textual app
# (app.py, app.tcss, widgets/), not `immich-tui`'s entry point (cli.py) and not the sandbox (demo/): the
# plugin imports them only for its `tui` command, which is for a workstation's terminal.
COPY sync_engine/ /app/sync_engine/
COPY immich_tui/__init__.py immich_tui/flags.py /app/immich_tui/
COPY immich_tui/plugin/ /app/immich_tui/plugin/
COPY immich_tui/services/ /app/immich_tui/services/

# Byte-code is compiled here, once: the runtime filesystem is read-only and PYTHONDONTWRITEBYTECODE is set.
# unchecked-hash .pyc files stay valid whatever mtimes the copy gives the sources (3.11 shares one magic number).
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /app/site /app/sync_engine /app/immich_tui


FROM ${RUNTIME_IMAGE}

ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE=""

LABEL org.opencontainers.image.title="immich-backup" \
      org.opencontainers.image.description="kubectl immich-backup: status, database backups and the restore drill of an Immich offsite backup" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# PYTHONSAFEPATH keeps the working directory off sys.path: only the image's own code is importable.
ENV PYTHONPATH=/app/site:/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1

# Owned by root and not writable by the user the plugin runs as.
COPY --from=builder /app /app

WORKDIR /app
USER 65532:65532

# No console script (nothing is pip-installed as a distribution, and there is no shell): the interpreter runs
# the plugin's package and exits with the code its `main` returns. Arguments are the plugin's (`drill …`).
ENTRYPOINT ["/usr/bin/python3", "-m", "immich_tui.plugin"]
CMD ["--help"]
