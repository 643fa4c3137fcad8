"""Code shared by every service: structured logging, Prometheus metrics and OpenTelemetry tracing."""
