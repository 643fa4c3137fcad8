"""JWT authentication through a real aiohttp server: HS256, RS256, ES256 and JWKS key sources."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from services.webhook_gateway.auth import (
    JWT_VERIFIER_KEY,
    LEEWAY_SECONDS_DEFAULT,
    TOKEN_BYTES_MAX,
    JwtVerifier,
    Principal,
    require_admin,
    require_user,
)
from services.webhook_gateway.http_errors import error_middleware
from services.webhook_gateway.jwt_keys import check_hs256_secret, classify_public_key

AUDIENCE = "credits-gateway"
ISSUER = "https://auth.example.com"
SECRET = "test-secret-0123456789abcdef-0123456789abcdef"
OTHER_SECRET = "other-secret-0123456789abcdef-0123456789abcdef"
USER_ID = "user-42"

Client = TestClient[web.Request, web.Application]


# --- keys and tokens -----------------------------------------------------------------------------


@functools.cache
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def other_rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def other_ec_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": USER_ID, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def handmade_token(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token built by hand: PyJWT refuses to produce the forgeries these tests need."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode('ascii')))}"


def hs256_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def alg_none_token() -> str:
    return handmade_token({"alg": "none", "typ": "JWT"}, claims(), lambda _: b"")


def hs256_signed_with_public_pem(pem: str, kid: str | None = None) -> str:
    """The algorithm-confusion forgery: HS256 with the (public) RSA key's PEM text as the HMAC secret."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    return handmade_token(header, claims(), lambda data: hmac.new(pem.encode(), data, hashlib.sha256).digest())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the app under test --------------------------------------------------------------------------


def _principal_json(principal: Principal) -> dict[str, Any]:
    return {"user_id": principal.user_id, "roles": sorted(principal.roles), "subject": principal.subject}


async def _me(request: web.Request) -> web.Response:
    principal = await require_user(request)
    assert await require_user(request) is principal  # Memoized per request.
    return web.json_response(_principal_json(principal))


async def _admin(request: web.Request) -> web.Response:
    return web.json_response(_principal_json(await require_admin(request)))


def make_app(verifier: JwtVerifier) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[JWT_VERIFIER_KEY] = verifier
    app.router.add_get("/me", _me)
    app.router.add_get("/admin", _admin)
    return app


# aiohttp refuses a header line over 8190 bytes by itself (a plain-text 400, before any middleware);
# the over-long-token tests raise that so the verifier's own TOKEN_BYTES_MAX is what answers.
HEADER_FIELD_BYTES_MAX = 2 * TOKEN_BYTES_MAX


@asynccontextmanager
async def serve(verifier: JwtVerifier) -> AsyncIterator[Client]:
    server = TestServer(make_app(verifier))
    await server.start_server(max_field_size=HEADER_FIELD_BYTES_MAX, max_line_size=HEADER_FIELD_BYTES_MAX)
    async with TestClient(server) as client:
        yield client


async def call(client: Client, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    response = await client.get(path, headers=headers)
    return response.status, dict(response.headers), await response.json()


def hs256_verifier() -> JwtVerifier:
    return JwtVerifier.hs256(SECRET, audience=AUDIENCE, issuer=ISSUER)


# --- HS256: the full matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: str
    headers: Callable[[], dict[str, str]]
    status: int
    code: str | None = None


HS256_CASES = [
    pytest.param(Case("/me", lambda: bearer(hs256_token()), 200), id="valid-user-token"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(roles=["admin"])), 200), id="admin-is-also-a-user"),
    pytest.param(Case("/admin", lambda: bearer(hs256_token(roles=["admin"])), 200), id="admin-on-admin-route"),
    pytest.param(Case("/admin", lambda: bearer(hs256_token()), 403, "PERMISSION_DENIED"), id="user-on-admin-route"),
    pytest.param(
        Case("/admin", lambda: bearer(hs256_token(roles=["reader", "Admin"])), 403, "PERMISSION_DENIED"),
        id="role-names-are-case-sensitive",
    ),
    pytest.param(Case("/me", lambda: {}, 401, "UNAUTHENTICATED"), id="missing-token"),
    pytest.param(Case("/admin", lambda: {}, 401, "UNAUTHENTICATED"), id="missing-token-admin-route"),
    pytest.param(Case("/me", lambda: {"Authorization": "Bearer "}, 401, "UNAUTHENTICATED"), id="empty-bearer"),
    pytest.param(
        Case("/me", lambda: {"Authorization": f"Basic {hs256_token()}"}, 401, "UNAUTHENTICATED"), id="wrong-scheme"
    ),
    pytest.param(Case("/me", lambda: bearer("not.a.jwt"), 401, "UNAUTHENTICATED"), id="garbage-token"),
    pytest.param(Case("/me", lambda: bearer("a" * 40), 401, "UNAUTHENTICATED"), id="garbage-no-dots"),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(exp=int(time.time()) - 3600)), 401, "UNAUTHENTICATED"), id="expired"
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(exp=int(time.time()) - LEEWAY_SECONDS_DEFAULT // 2)), 200),
        id="expired-within-leeway",
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(nbf=int(time.time()) + 3600)), 401, "UNAUTHENTICATED"),
        id="not-yet-valid",
    ),
    pytest.param(
        Case("/me", lambda: bearer(jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")), 401, "UNAUTHENTICATED"),
        id="wrong-signature",
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(aud="someone-else")), 401, "UNAUTHENTICATED"), id="wrong-audience"
    ),
    pytest.param(Case("/me", lambda: bearer(hs256_token(aud=None)), 401, "UNAUTHENTICATED"), id="missing-audience"),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(iss="https://evil.example")), 401, "UNAUTHENTICATED"),
        id="wrong-issuer",
    ),
    pytest.param(Case("/me", lambda: bearer(hs256_token(iss=None)), 401, "UNAUTHENTICATED"), id="missing-issuer"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(exp=None)), 401, "UNAUTHENTICATED"), id="missing-exp"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(sub=None)), 401, "UNAUTHENTICATED"), id="missing-sub"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(sub=12345)), 401, "UNAUTHENTICATED"), id="sub-not-a-string"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(sub="  ")), 401, "UNAUTHENTICATED"), id="sub-blank"),
    pytest.param(Case("/me", lambda: bearer(hs256_token(sub="u" * 256)), 401, "UNAUTHENTICATED"), id="sub-too-long"),
    pytest.param(Case("/me", lambda: bearer(alg_none_token()), 401, "UNAUTHENTICATED"), id="alg-none"),
    pytest.param(
        Case("/admin", lambda: bearer(hs256_token(roles="admin")), 401, "UNAUTHENTICATED"), id="roles-a-string"
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(roles=["admin", 7])), 401, "UNAUTHENTICATED"), id="roles-not-strings"
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(roles={"admin": True})), 401, "UNAUTHENTICATED"), id="roles-an-object"
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(roles=[f"r{i}" for i in range(33)])), 401, "UNAUTHENTICATED"),
        id="roles-too-many",
    ),
    pytest.param(
        Case("/me", lambda: bearer("a" * (TOKEN_BYTES_MAX + 1)), 401, "UNAUTHENTICATED"), id="token-over-8-KiB"
    ),
    pytest.param(
        Case("/me", lambda: bearer(hs256_token(padding="x" * (TOKEN_BYTES_MAX + 1))), 401, "UNAUTHENTICATED"),
        id="validly-signed-but-over-8-KiB",
    ),
]


@pytest.mark.parametrize("case", HS256_CASES)
@pytest.mark.asyncio
async def test_hs256_matrix(case: Case) -> None:
    async with serve(hs256_verifier()) as client:
        status, headers, body = await call(client, case.path, case.headers())
    assert status == case.status, body
    if case.code is None:
        assert body["user_id"] == USER_ID
        assert body["subject"] == USER_ID
        return
    assert body == {"error": {"code": case.code, "message": body["error"]["message"]}}
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.asyncio
async def test_roles_absent_means_no_roles_and_list_is_kept() -> None:
    async with serve(hs256_verifier()) as client:
        _, _, without_roles = await call(client, "/me", bearer(hs256_token()))
        _, _, with_roles = await call(client, "/me", bearer(hs256_token(roles=["reader", "admin"])))
    assert without_roles["roles"] == []
    assert with_roles["roles"] == ["admin", "reader"]


@pytest.mark.asyncio
async def test_missing_token_challenge_has_no_error_attribute() -> None:
    async with serve(hs256_verifier()) as client:
        _, missing_headers, _ = await call(client, "/me", {})
        _, invalid_headers, _ = await call(client, "/me", bearer("not.a.jwt"))
    assert missing_headers["WWW-Authenticate"] == "Bearer"
    assert invalid_headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.asyncio
async def test_expired_token_says_so() -> None:
    async with serve(hs256_verifier()) as client:
        _, _, body = await call(client, "/me", bearer(hs256_token(exp=int(time.time()) - 3600)))
    assert "expired" in body["error"]["message"]


REFUSAL_REASONS = [
    pytest.param(lambda: hs256_token(exp=int(time.time()) - 3600), "token has expired", id="expired"),
    pytest.param(lambda: hs256_token(nbf=int(time.time()) + 3600), "not valid yet", id="not-yet-valid"),
    pytest.param(lambda: hs256_token(aud=None), "lacks the required aud claim", id="audience-missing"),
    pytest.param(lambda: hs256_token(aud="someone-else"), "audience (aud) is not", id="audience-wrong"),
    pytest.param(lambda: hs256_token(iss=None), "lacks the required iss claim", id="issuer-missing"),
    pytest.param(lambda: hs256_token(iss="https://evil.example/"), "issuer (iss) is not", id="issuer-wrong"),
    pytest.param(lambda: hs256_token(exp=None), "lacks the required exp claim", id="expiry-missing"),
    pytest.param(
        lambda: jwt.encode(claims(), "another-secret-that-is-long-enough-0123456789", algorithm="HS256"),
        "signature does not verify",
        id="signature",
    ),
    pytest.param(alg_none_token, "algorithm is not", id="algorithm-none"),
    pytest.param(lambda: "not.a.jwt", "not a well-formed JWT", id="malformed"),
    pytest.param(lambda: hs256_token(sub="u" * 300), "subject (sub) is not a user id", id="subject-too-long"),
    pytest.param(lambda: hs256_token(sub="a b"), "subject (sub) is not a user id", id="subject-with-space"),
]


@pytest.mark.parametrize(("make_token", "reason"), REFUSAL_REASONS)
@pytest.mark.asyncio
async def test_a_refused_token_is_told_which_check_failed(make_token: Callable[[], str], reason: str) -> None:
    async with serve(hs256_verifier()) as client:
        status, _, body = await call(client, "/me", bearer(make_token()))
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert reason in body["error"]["message"]
    # Never a value: neither the configured audience/issuer nor the key.
    assert AUDIENCE not in body["error"]["message"] and ISSUER not in body["error"]["message"]
    assert SECRET not in json.dumps(body)


@pytest.mark.asyncio
async def test_a_token_signed_with_another_key_learns_nothing_about_its_claims() -> None:
    # The signature is checked before any claim: a forger with a wrong audience hears only "signature".
    forged = jwt.encode(claims(aud="wrong", exp=int(time.time()) - 3600), "x" * 40, algorithm="HS256")
    async with serve(hs256_verifier()) as client:
        _, _, body = await call(client, "/me", bearer(forged))
    assert "signature" in body["error"]["message"]


@pytest.mark.asyncio
async def test_audience_and_issuer_unchecked_when_not_configured() -> None:
    async with serve(JwtVerifier.hs256(SECRET)) as client:
        status, _, _ = await call(client, "/me", bearer(hs256_token(aud="anything", iss="anyone")))
        missing_exp_status, _, _ = await call(client, "/me", bearer(hs256_token(aud=None, iss=None, exp=None)))
    assert status == 200
    assert missing_exp_status == 401  # exp and sub stay required whatever is configured.


# --- RS256 / ES256 from a PEM public key ---------------------------------------------------------


def rs256_token(key: rsa.RSAPrivateKey | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key or rsa_private_key(), algorithm="RS256")


def es256_token(key: ec.EllipticCurvePrivateKey | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key or ec_private_key(), algorithm="ES256")


PUBLIC_KEY_CASES = [
    pytest.param(rsa_private_key, rs256_token, 200, id="rs256-valid"),
    pytest.param(rsa_private_key, lambda: rs256_token(roles=["admin"]), 200, id="rs256-valid-admin"),
    pytest.param(rsa_private_key, lambda: rs256_token(other_rsa_private_key()), 401, id="rs256-wrong-key"),
    pytest.param(rsa_private_key, lambda: rs256_token(exp=int(time.time()) - 3600), 401, id="rs256-expired"),
    pytest.param(rsa_private_key, lambda: rs256_token(aud="someone-else"), 401, id="rs256-wrong-audience"),
    pytest.param(
        rsa_private_key, lambda: hs256_signed_with_public_pem(public_pem(rsa_private_key())), 401, id="rs256-key-hs256"
    ),
    pytest.param(rsa_private_key, es256_token, 401, id="rs256-key-es256-token"),
    pytest.param(rsa_private_key, hs256_token, 401, id="rs256-key-hs256-secret-token"),
    pytest.param(rsa_private_key, alg_none_token, 401, id="rs256-key-alg-none"),
    pytest.param(ec_private_key, es256_token, 200, id="es256-valid"),
    pytest.param(ec_private_key, lambda: es256_token(other_ec_private_key()), 401, id="es256-wrong-key"),
    pytest.param(ec_private_key, lambda: es256_token(iss="https://evil.example"), 401, id="es256-wrong-issuer"),
    pytest.param(
        ec_private_key, lambda: hs256_signed_with_public_pem(public_pem(ec_private_key())), 401, id="es256-key-hs256"
    ),
    pytest.param(ec_private_key, rs256_token, 401, id="es256-key-rs256-token"),
]


@pytest.mark.parametrize(("private_key", "token", "status"), PUBLIC_KEY_CASES)
@pytest.mark.asyncio
async def test_public_key_matrix(
    private_key: Callable[[], rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], token: Callable[[], str], status: int
) -> None:
    verifier = JwtVerifier.public_key(public_pem(private_key()), audience=AUDIENCE, issuer=ISSUER)
    async with serve(verifier) as client:
        actual_status, _, body = await call(client, "/me", bearer(token()))
    assert actual_status == status, body


@pytest.mark.asyncio
async def test_public_key_admin_route_checks_role() -> None:
    verifier = JwtVerifier.public_key(public_pem(rsa_private_key()), audience=AUDIENCE, issuer=ISSUER)
    async with serve(verifier) as client:
        user_status, _, _ = await call(client, "/admin", bearer(rs256_token()))
        admin_status, _, _ = await call(client, "/admin", bearer(rs256_token(roles=["admin"])))
    assert user_status == 403
    assert admin_status == 200


# --- JWKS ----------------------------------------------------------------------------------------

JWKS_SECRET = b"jwks-oct-secret-0123456789abcdef-0123456789"


def jwks_document() -> dict[str, Any]:
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_private_key().public_key(), as_dict=True) | {"kid": "rsa-1", "use": "sig"}
    ec_jwk = ECAlgorithm.to_jwk(ec_private_key().public_key(), as_dict=True) | {"kid": "ec-1", "use": "sig"}
    oct_jwk = HMACAlgorithm.to_jwk(JWKS_SECRET, as_dict=True) | {"kid": "hmac-1", "use": "sig"}
    return {"keys": [rsa_jwk, ec_jwk, oct_jwk]}


@asynccontextmanager
async def jwks_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A tiny JWKS endpoint on a local port; yields its URL and a list counting its hits."""
    hits: list[int] = []

    async def keys(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(jwks_document())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", keys)
    async with TestServer(app) as server:
        yield str(server.make_url("/.well-known/jwks.json")), hits


def kid_token(private_key: Any, algorithm: str, kid: str, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), private_key, algorithm=algorithm, headers={"kid": kid})


JWKS_CASES = [
    pytest.param(lambda: kid_token(rsa_private_key(), "RS256", "rsa-1"), 200, None, id="rs256-kid"),
    pytest.param(lambda: kid_token(ec_private_key(), "ES256", "ec-1"), 200, None, id="es256-kid"),
    pytest.param(
        lambda: kid_token(other_rsa_private_key(), "RS256", "rsa-1"), 401, "UNAUTHENTICATED", id="wrong-signature"
    ),
    pytest.param(
        lambda: kid_token(rsa_private_key(), "RS256", "rsa-1", exp=int(time.time()) - 3600),
        401,
        "UNAUTHENTICATED",
        id="expired",
    ),
    pytest.param(
        lambda: kid_token(rsa_private_key(), "RS256", "rsa-1", aud="someone-else"),
        401,
        "UNAUTHENTICATED",
        id="wrong-audience",
    ),
    pytest.param(lambda: kid_token(rsa_private_key(), "RS256", "nope"), 401, "UNAUTHENTICATED", id="unknown-kid"),
    pytest.param(rs256_token, 401, "UNAUTHENTICATED", id="no-kid"),
    pytest.param(
        lambda: kid_token(rsa_private_key(), "RS256", "ec-1"), 401, "UNAUTHENTICATED", id="rs256-token-on-ec-kid"
    ),
    pytest.param(
        lambda: kid_token(JWKS_SECRET, "HS256", "hmac-1"), 401, "UNAUTHENTICATED", id="symmetric-jwks-key-refused"
    ),
    pytest.param(
        lambda: hs256_signed_with_public_pem(public_pem(rsa_private_key()), kid="rsa-1"),
        401,
        "UNAUTHENTICATED",
        id="hs256-with-public-key-as-secret",
    ),
    pytest.param(lambda: "garbage", 401, "UNAUTHENTICATED", id="garbage"),
]


@pytest.mark.parametrize(("token", "status", "code"), JWKS_CASES)
@pytest.mark.asyncio
async def test_jwks_matrix(token: Callable[[], str], status: int, code: str | None) -> None:
    async with jwks_server() as (url, _), serve(JwtVerifier.jwks(url, audience=AUDIENCE, issuer=ISSUER)) as client:
        actual_status, _, body = await call(client, "/me", bearer(token()))
    assert actual_status == status, body
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.asyncio
async def test_jwks_keys_are_cached() -> None:
    async with jwks_server() as (url, hits), serve(JwtVerifier.jwks(url, audience=AUDIENCE)) as client:
        for _ in range(5):
            status, _, _ = await call(client, "/me", bearer(kid_token(rsa_private_key(), "RS256", "rsa-1")))
            assert status == 200
            status, _, _ = await call(client, "/me", bearer(kid_token(ec_private_key(), "ES256", "ec-1")))
            assert status == 200
    assert len(hits) == 1


def _unused_local_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"


@pytest.mark.asyncio
async def test_jwks_unreachable_is_503_not_401() -> None:
    async with serve(JwtVerifier.jwks(_unused_local_url())) as client:
        status, headers, body = await call(client, "/me", bearer(kid_token(rsa_private_key(), "RS256", "rsa-1")))
    assert status == 503
    assert body["error"]["code"] == "UNAVAILABLE"
    assert int(headers["Retry-After"]) > 0


@pytest.mark.asyncio
async def test_over_long_token_is_refused_by_length_before_parsing() -> None:
    async with serve(hs256_verifier()) as client:
        status, _, body = await call(client, "/me", bearer(hs256_token(padding="x" * TOKEN_BYTES_MAX)))
    assert status == 401
    assert "too long" in body["error"]["message"]


@pytest.mark.asyncio
async def test_over_long_token_never_reaches_the_jwks_endpoint() -> None:
    async with jwks_server() as (url, hits), serve(JwtVerifier.jwks(url)) as client:
        status, _, _ = await call(client, "/me", bearer("a" * (TOKEN_BYTES_MAX + 1)))
    assert status == 401
    assert hits == []


# --- verification runs once per request ----------------------------------------------------------


@dataclass
class CountingKeys:
    resolved: int = 0

    async def resolve(self, token: str) -> tuple[Any, Sequence[str]]:
        self.resolved += 1
        return SECRET.encode(), ("HS256",)


@pytest.mark.asyncio
async def test_token_is_verified_once_per_request() -> None:
    keys = CountingKeys()
    async with serve(JwtVerifier(keys, audience=AUDIENCE, issuer=ISSUER)) as client:
        status, _, _ = await call(client, "/me", bearer(hs256_token()))
    assert status == 200
    assert keys.resolved == 1


# --- key classification (used by edge_config at start-up) ----------------------------------------


def test_classify_public_key_accepts_rsa_2048_and_p256() -> None:
    assert classify_public_key(public_pem(rsa_private_key()))[1] == "RS256"
    assert classify_public_key(public_pem(ec_private_key()))[1] == "ES256"


@pytest.mark.parametrize(
    ("make_pem", "fragment"),
    [
        pytest.param(lambda: public_pem(rsa.generate_private_key(65537, 1024)), "2048", id="rsa-1024"),
        pytest.param(lambda: public_pem(ec.generate_private_key(ec.SECP384R1())), "P-256", id="ec-p384"),
        pytest.param(lambda: public_pem(ed25519.Ed25519PrivateKey.generate()), "not supported", id="ed25519"),
        pytest.param(lambda: "not a key", "PEM", id="garbage"),
        pytest.param(lambda: SECRET, "PEM", id="a-secret"),
    ],
)
def test_classify_public_key_refuses(make_pem: Callable[[], str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        classify_public_key(make_pem())


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("short", id="too-short"),
        pytest.param("x" * 31, id="31-bytes"),
        pytest.param(public_pem(ec_private_key()), id="a-pem-key"),
    ],
)
def test_check_hs256_secret_refuses(secret: str) -> None:
    with pytest.raises(ValueError, match=r"HS256|PEM"):
        check_hs256_secret(secret)


def test_check_hs256_secret_accepts_32_bytes() -> None:
    assert check_hs256_secret("x" * 32) == b"x" * 32


def test_principal_is_admin() -> None:
    assert Principal(user_id="u", roles=frozenset({"admin"}), subject="u").is_admin
    assert not Principal(user_id="u", roles=frozenset({"reader"}), subject="u").is_admin
