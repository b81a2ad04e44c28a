# One image for the product's processes: `flexsf worker` (the default), `flexsf gateway --host 0.0.0.0`,
# `flexsf codec-server --host 0.0.0.0` and docker-compose's flexsf-setup (the key file, then
# `flexsf search-attributes --create`). Configuration comes from the environment (docker-compose gives each service
# its own variables from .env); nothing secret is baked in. Build: `docker compose build` or `docker build .`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The locked, hash-checked runtime set first, so a change to the sources reuses this layer. --no-deps: the lock is
# complete, nothing outside it may come in.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt

# The production sources only: no sandboxes, development tools or tests (.dockerignore keeps them out of the context).
COPY pyproject.toml README.md worker.py ./
COPY flexsf flexsf
COPY workflows workflows
COPY activities activities
COPY gateway gateway
COPY ops ops
RUN pip install --no-deps . && pip check && rm -rf build *.egg-info

RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin flexsf
# Where compose's flexsf-setup writes the payload encryption key file: a new named volume mounted here takes this
# owner and mode, so the unprivileged user may write it and nobody else may read it.
RUN mkdir -p /var/lib/flexsf/keys && chown 10001:10001 /var/lib/flexsf/keys && chmod 700 /var/lib/flexsf/keys
USER 10001:10001

EXPOSE 8000 8081
CMD ["flexsf", "worker"]
