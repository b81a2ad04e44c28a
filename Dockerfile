# One image for both processes: `flexsf worker` (the default) and `flexsf gateway --host 0.0.0.0`.
# Configuration comes from the environment (docker-compose passes .env); nothing secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY flexsf ./flexsf
COPY sandboxes ./sandboxes
COPY workflows ./workflows
COPY activities ./activities
COPY gateway ./gateway
COPY worker.py ./
RUN pip install . && rm -rf /root/.cache

RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin flexsf
USER 10001:10001

EXPOSE 8000
CMD ["flexsf", "worker"]
