# One image for every service of the suite; the command picks the service:
#   python -m services.ledger | python -m services.webhook_gateway | python -m services.reconciler
#   alembic upgrade head (one-shot migration)
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY credits ./credits
COPY services ./services
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install . && useradd --system --uid 10001 credits

USER credits
EXPOSE 50051 8080 9100
# No secrets are baked in: every setting comes from the environment at run time.
CMD ["python", "-m", "services.ledger"]
