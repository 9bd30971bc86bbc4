# syntax=docker/dockerfile:1
# The jobq server image: `docker build -t jobq .` (README.md, "Deploying").
# tests/test_deploy.py runs this file's ENTRYPOINT, USER, WORKDIR, ENV and HEALTHCHECK as written.

# -- build: a virtualenv with jobq[server] and its pinned dependencies -------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/jobq
WORKDIR /src
# the pinned dependencies first, so a change to jobq's code reuses this layer
COPY requirements.txt requirements-server.txt ./
RUN /opt/jobq/bin/pip install -r requirements.txt -r requirements-server.txt
COPY pyproject.toml main.py ./
COPY jobq ./jobq
RUN /opt/jobq/bin/pip install --no-deps . && /opt/jobq/bin/jobq serve --help > /dev/null

# -- runtime: the virtualenv, a non-root user and the data volume --------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 jobq \
    && useradd --system --uid 10001 --gid jobq --no-create-home --home-dir /data --shell /usr/sbin/nologin jobq \
    && mkdir /data && chown jobq:jobq /data
COPY --from=build /opt/jobq /opt/jobq
# JOBQ_HOST: every interface of the container; jobq then refuses to start without tokens
# (JOBQ_TOKEN, JOBQ_WORKER_TOKEN, JOBQ_ADMIN_TOKEN or JOBQ_TOKENS_FILE). The default store,
# sqlite:///jobq.db, is relative to the working directory: /data/jobq.db, on the volume.
ENV PATH=/opt/jobq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOBQ_HOST=0.0.0.0 \
    JOBQ_PORT=8080 \
    JOBQ_GRPC_PORT=50051
WORKDIR /data
VOLUME /data
USER 10001:10001
# HTTP, gRPC, and the Faktory protocol (off unless JOBQ_FAKTORY_PORT=7419)
EXPOSE 8080 50051 7419
# Healthy while /health says "ok": not while it drains or its store cannot write (then it answers 503).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import json, os, sys, urllib.request; answer = urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('JOBQ_PORT', '8080'), timeout=3); sys.exit(json.load(answer)['status'] != 'ok')"]
# SIGTERM (docker stop) drains: give it longer than JOBQ_DRAIN_TIMEOUT (30 s), e.g. docker stop -t 45
STOPSIGNAL SIGTERM
ENTRYPOINT ["jobq", "serve"]
