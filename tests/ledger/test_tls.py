"""TLS and mutual TLS are configuration options of the ledger (SPEC §3): with TLS the client
must trust the server's CA; with mutual TLS a client without a certificate of the configured
CA is refused at the handshake, before any token is looked at."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.ledger import app, errors
from services.ledger.client import ClientTls, LedgerClient
from services.ledger.config import TlsSettings
from tests.conftest import ALL_ROLES_TOKEN, ledger_settings, new_key

CERTIFICATE_DAYS = 1


@dataclass(frozen=True)
class Pem:
    certificate: bytes
    private_key: bytes


def issue(
    subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_certificate, issuer_key = issuer if issuer is not None else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_certificate.subject if issuer_certificate is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    return Pem(
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


@dataclass(frozen=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = issue("test ledger CA", None, ca=True)
    other_ca = issue("another CA", None, ca=True)
    return Pki(
        ca=pem(*ca),
        server=pem(*issue("ledger", ca, ca=False)),
        client=pem(*issue("gateway", ca, ca=False)),
        stranger=pem(*issue("stranger", other_ca, ca=False)),
    )


async def start_ledger(database_url: str, tls: TlsSettings) -> app.LedgerServer:
    return await app.start(ledger_settings(database_url, tls=tls))


@pytest.fixture
async def tls_ledger(database_url, pki) -> AsyncIterator[str]:
    server = await start_ledger(
        database_url,
        TlsSettings(certificate_chain=pki.server.certificate, private_key=pki.server.private_key, client_ca=None),
    )
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_seconds=1.0)


@pytest.fixture
async def mtls_ledger(database_url, pki) -> AsyncIterator[str]:
    server = await start_ledger(
        database_url,
        TlsSettings(
            certificate_chain=pki.server.certificate, private_key=pki.server.private_key, client_ca=pki.ca.certificate
        ),
    )
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_seconds=1.0)


async def test_tls_client_trusting_the_ca_is_served(tls_ledger, pki, user_id):
    async with LedgerClient(tls_ledger, ALL_ROLES_TOKEN, tls=ClientTls(root_certificates=pki.ca.certificate)) as client:
        response = await client.credit(user_id, 5, new_key(), "grant")
    assert response.transaction.balance_after == 5


@pytest.mark.parametrize("client_kind", ["plaintext", "untrusted-ca"])
async def test_tls_refuses_plaintext_and_untrusted_servers(tls_ledger, pki, user_id, client_kind):
    tls = None if client_kind == "plaintext" else ClientTls(root_certificates=pki.stranger.certificate)
    async with LedgerClient(tls_ledger, ALL_ROLES_TOKEN, tls=tls, attempts_max=1, deadline_seconds=5) as client:
        with pytest.raises(errors.Unavailable):
            await client.get_balance(user_id)


async def test_mutual_tls_client_with_a_certificate_of_the_ca_is_served(mtls_ledger, pki, user_id):
    tls = ClientTls(
        root_certificates=pki.ca.certificate,
        private_key=pki.client.private_key,
        certificate_chain=pki.client.certificate,
    )
    async with LedgerClient(mtls_ledger, ALL_ROLES_TOKEN, tls=tls) as client:
        assert (await client.get_balance(user_id)).balance == 0


@pytest.mark.parametrize("client_kind", ["no-certificate", "certificate-of-another-ca"])
async def test_mutual_tls_refuses_clients_without_a_trusted_certificate(mtls_ledger, pki, user_id, client_kind):
    if client_kind == "no-certificate":
        tls = ClientTls(root_certificates=pki.ca.certificate)
    else:
        tls = ClientTls(
            root_certificates=pki.ca.certificate,
            private_key=pki.stranger.private_key,
            certificate_chain=pki.stranger.certificate,
        )
    async with LedgerClient(mtls_ledger, ALL_ROLES_TOKEN, tls=tls, attempts_max=1, deadline_seconds=5) as client:
        with pytest.raises(errors.Unavailable) as raised:
            await client.get_balance(user_id)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
