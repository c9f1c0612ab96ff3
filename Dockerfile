# The assistantd server image.
#
#   docker build -t assistantd:latest .                       where a registry is reachable
#   docker/build-offline.sh                                   without one: the same file, built
#                                                             FROM an offline base (--build-arg BASE=…)
#
# It runs `assistantd serve --host 0.0.0.0` on port 8000 as an unprivileged user, keeps its data
# (uploaded file bytes; the SQLite file when no ASSISTANTD_DATABASE_URL is set) in the volume
# /data, and answers its health check on /healthz. The code interpreter needs a Docker engine:
# mount the host's socket (and give the user its group) or set DOCKER_HOST (docker/compose.yaml).
# Works with the legacy builder and BuildKit alike (no BuildKit-only syntax).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
WORKDIR /opt/assistantd
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -q --only-binary=:all: -r /tmp/requirements.txt \
 && find /opt/venv/lib/python3*/site-packages -type d -name tests -prune -exec rm -rf {} + \
 && rm /tmp/requirements.txt

# The package, installed editable in place: migrations and alembic.ini are found beside src/ as
# in a checkout (assistantd.db.migrate), and the embedding model's tokenizer ships in src/.
# README.md (pyproject's long description) stays out of the context: editing it rebuilds nothing.
COPY alembic.ini ./
COPY migrations ./migrations
COPY src ./src
RUN touch README.md \
 && pip install -q --no-deps -e . \
 && python3 -m compileall -q src migrations \
 && python3 -c "from pathlib import Path; from assistantd.vector_stores.embeddings import derive_model; derive_model(Path('/opt/assistantd/models'))" \
 && groupadd --system --gid 10001 assistantd \
 && useradd --system --uid 10001 --gid assistantd --home-dir /home/assistantd --create-home \
        --shell /usr/sbin/nologin assistantd \
 && install -d -o assistantd -g assistantd -m 0750 /data

# The local embedding model's 8-bit file, made above (embeddings.derive_model), not at each start.
ENV ASSISTANTD_DATA_DIR=/data \
    ASSISTANTD_MODEL_CACHE_DIR=/opt/assistantd/models
VOLUME ["/data"]
USER assistantd
EXPOSE 8000
# No curl in slim images: Python asks.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["assistantd", "serve", "--host", "0.0.0.0", "--port", "8000"]
