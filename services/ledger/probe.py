"""`python -m services.ledger.probe`: exit 0 only when the ledger's gRPC health check answers SERVING.

A container healthcheck (docker compose, a Kubernetes exec probe) for the ledger, which speaks only
gRPC: it calls the standard `grpc.health.v1.Health/Check`, which the ledger answers SERVING exactly
while its database answers (services.ledger.app). The health service needs no caller token.

    python -m services.ledger.probe                          # this container's ledger: 127.0.0.1 + LEDGER_LISTEN's port
    python -m services.ledger.probe --target ledger:50051 --timeout-seconds 2

Exit codes: 0 SERVING; 1 anything else (NOT_SERVING, unknown service, unreachable, too slow, a bad
argument). Docker reserves 2 in healthchecks, so the probe never uses it. One line on stdout says why.

TLS: when LEDGER_TLS_CERT_FILE is set (the ledger serves TLS), the probe connects with TLS too,
trusting `--tls-ca` (default: that certificate file itself, right for a self-signed certificate).
When the ledger requires client certificates (LEDGER_TLS_CLIENT_CA_FILE), pass `--tls-cert` and
`--tls-key`; `--tls-server-name` overrides the name checked against the certificate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config
from services.common.config import ConfigError
from services.ledger.config import LISTEN_DEFAULT

EXIT_SERVING: Final = 0
EXIT_NOT_SERVING: Final = 1
TIMEOUT_SECONDS_DEFAULT: Final = 3.0
TIMEOUT_SECONDS_MAX: Final = 60.0
PEM_FILE_BYTES_MAX: Final = 1024 * 1024
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


class ProbeError(Exception):
    """The probe could not ask (bad argument, unreadable file); the message says which."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2, which Docker reserves in healthchecks: a bad argument is just "unhealthy".
        self.print_usage(sys.stderr)
        print(f"probe: {message}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_SERVING)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m services.ledger.probe", description="Exit 0 when the ledger is SERVING.")
    parser.add_argument("--target", help="host:port of the ledger (default: 127.0.0.1 and LEDGER_LISTEN's port)")
    parser.add_argument("--service", default="", help="health service name ('' = the whole server, the default)")
    parser.add_argument("--timeout-seconds", type=float, default=TIMEOUT_SECONDS_DEFAULT, help="deadline (3)")
    parser.add_argument("--tls-ca", help="PEM roots to trust (default with TLS on: LEDGER_TLS_CERT_FILE)")
    parser.add_argument("--tls-cert", help="client certificate chain (PEM), when the ledger requires one")
    parser.add_argument("--tls-key", help="client private key (PEM), with --tls-cert")
    parser.add_argument("--tls-server-name", help="name to check the ledger's certificate against")
    return parser


def default_target(environ: Mapping[str, str]) -> str:
    """Where this container's ledger listens: LEDGER_LISTEN, with a wildcard host read as 127.0.0.1."""
    host, _, port = config.listen_address(environ, "LEDGER_LISTEN", LISTEN_DEFAULT).rpartition(":")
    return f"{'127.0.0.1' if host in _WILDCARD_HOSTS else host}:{port}"


def channel_credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    """None for plaintext; TLS credentials when asked for, or when the ledger beside us serves TLS."""
    server_cert = config.optional(environ, "LEDGER_TLS_CERT_FILE")
    ca_path = args.tls_ca or server_cert
    if ca_path is None and args.tls_cert is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ProbeError("--tls-cert and --tls-key: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(ca_path, "--tls-ca") if ca_path else None,
        private_key=_read_pem(args.tls_key, "--tls-key") if args.tls_key else None,
        certificate_chain=_read_pem(args.tls_cert, "--tls-cert") if args.tls_cert else None,
    )


def _read_pem(path: str, name: str) -> bytes:
    try:
        file = Path(path)
        if file.stat().st_size > PEM_FILE_BYTES_MAX:
            raise ProbeError(f"{name}: {path!r} is larger than {PEM_FILE_BYTES_MAX} bytes")
        return file.read_bytes()
    except OSError as exc:
        raise ProbeError(f"{name}: cannot read {path!r} ({exc.strerror})") from None


def check(
    target: str,
    service: str,
    timeout_seconds: float,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> str:
    """The health status name (SERVING, NOT_SERVING, ...) or why there is none (UNAVAILABLE: ...)."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return f"{code.name if code else 'ERROR'}: {details}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    if not 0 < args.timeout_seconds <= TIMEOUT_SECONDS_MAX:
        print(f"probe: --timeout-seconds: expected more than 0 and at most {TIMEOUT_SECONDS_MAX:.0f}")
        return EXIT_NOT_SERVING
    try:
        target = args.target or default_target(env)
        credentials = channel_credentials(args, env)
    except (ConfigError, ProbeError) as exc:
        print(f"probe: {exc}")
        return EXIT_NOT_SERVING
    status = check(target, args.service, args.timeout_seconds, credentials, args.tls_server_name)
    print(f"ledger {target}: {status}")
    return EXIT_SERVING if status == "SERVING" else EXIT_NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
