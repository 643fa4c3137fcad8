"""`python -m services.ledger`: the ledger gRPC server, configured by the environment (SPEC §6).

With LEDGER_WORKERS > 1 (the default on a machine with several CPUs) this process supervises that many
server processes sharing the listen port; see services/ledger/workers.py.
"""

from __future__ import annotations

import logging
import os
import sys

from services.common.config import ConfigError
from services.common.logs import configure_logging, register_secret
from services.common.tracing import configure_tracing
from services.ledger import workers
from services.ledger.config import LedgerSettings

log = logging.getLogger("services.ledger")


def main() -> int:
    try:
        settings = LedgerSettings.from_env(os.environ)
        # Logging first: what tracing set-up warns about (an exporter package missing) is a JSON line too.
        configure_logging("ledger", settings.log_level)
        for secret in settings.secret_values:
            register_secret(secret)
        tracer_provider = configure_tracing("ledger", set_global=False)  # checks the OTEL_* settings only
    except ConfigError as exc:
        print(f"ledger: configuration error: {exc}", file=sys.stderr)
        return 2
    if tracer_provider is not None:
        tracer_provider.shutdown()
    if settings.worker_count == 1:
        return workers.serve(settings, metrics_port=settings.metrics_port)
    return workers.supervise(settings)


if __name__ == "__main__":
    sys.exit(main())
