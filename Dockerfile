# One image for every part of the suite; the command picks the part (docker-compose.yml):
#   python -m services.ledger | python -m services.webhook_gateway | python -m services.reconciler
#   alembic upgrade head (the one-shot migration) | creditsctl ... (the operator CLI)
#   python -m services.ledger.probe (the ledger's healthcheck)
# No secrets are baked in: every setting comes from the environment at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first, the locked versions with their hashes (./scripts/lock.sh): rebuilt only when they change.
COPY pyproject.toml README.md requirements.txt ./
RUN pip install --require-hashes -r requirements.txt

# The code: generated gRPC stubs, the services (and creditsctl), the migrations.
COPY credits ./credits
COPY services ./services
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --no-create-home credits

# Runs as an unprivileged user; the code stays root-owned and read-only to it.
USER credits
# 50051 ledger (gRPC), 8080 gateway (HTTP, /metrics too), 9100 METRICS_PORT of the ledger and the reconciler.
EXPOSE 50051 8080 9100
CMD ["python", "-m", "services.ledger"]
