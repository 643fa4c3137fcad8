"""EdgeSettings.from_env: defaults, normalization, and one-line errors naming the variable."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.webhook_gateway.auth import JwtVerifier
from services.webhook_gateway.edge_config import ConfigError, EdgeSettings, parse_origin

SECRET = "config-test-secret-0123456789abcdef-0123"


@functools.cache
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def ec_pem(curve: ec.EllipticCurve) -> str:
    key = ec.generate_private_key(curve)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def env(**values: str) -> dict[str, str]:
    return {"JWT_SECRET": SECRET} | values


def config_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        EdgeSettings.from_env(environ)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- accepted -----------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = EdgeSettings.from_env(env())
    assert settings.jwt_secret == SECRET
    assert settings.jwt_public_key_pem is None
    assert settings.jwt_jwks_url is None
    assert settings.jwt_audience is None
    assert settings.jwt_issuer is None
    assert settings.cors_allowed_origins == ()
    assert settings.redis_url is None
    assert settings.rate_limit_per_user_per_minute == 120
    assert settings.rate_limit_per_ip_per_minute == 300
    assert settings.trusted_proxy_count == 0


def test_all_values() -> None:
    settings = EdgeSettings.from_env(
        env(
            JWT_AUDIENCE="credits-gateway",
            JWT_ISSUER="https://auth.example.com",
            CORS_ALLOWED_ORIGINS="https://app.example.com, http://localhost:3000",
            REDIS_URL="redis://:pw@redis:6379/0",
            RATE_LIMIT_PER_USER_PER_MINUTE="60",
            RATE_LIMIT_PER_IP_PER_MINUTE="600",
            TRUSTED_PROXY_COUNT="2",
        )
    )
    assert settings.jwt_audience == "credits-gateway"
    assert settings.jwt_issuer == "https://auth.example.com"
    assert settings.cors_allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.redis_url == "redis://:pw@redis:6379/0"
    assert settings.rate_limit_per_user_per_minute == 60
    assert settings.rate_limit_per_ip_per_minute == 600
    assert settings.trusted_proxy_count == 2


def test_empty_values_count_as_unset() -> None:
    settings = EdgeSettings.from_env(env(JWT_PUBLIC_KEY="", JWT_JWKS_URL="  ", REDIS_URL="", TRUSTED_PROXY_COUNT=""))
    assert settings.jwt_public_key_pem is None
    assert settings.redis_url is None
    assert settings.trusted_proxy_count == 0


def test_public_key_as_pem_text() -> None:
    settings = EdgeSettings.from_env({"JWT_PUBLIC_KEY": rsa_pem()})
    assert settings.jwt_public_key_pem == rsa_pem().strip()
    assert settings.jwt_secret is None


def test_public_key_with_escaped_newlines() -> None:
    one_line = rsa_pem().replace("\n", "\\n")
    assert EdgeSettings.from_env({"JWT_PUBLIC_KEY": one_line}).jwt_public_key_pem == rsa_pem().strip()


def test_public_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt.pem"
    pem = ec_pem(ec.SECP256R1())
    path.write_text(pem)
    assert EdgeSettings.from_env({"JWT_PUBLIC_KEY": str(path)}).jwt_public_key_pem == pem


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://auth.example.com/.well-known/jwks.json", id="https"),
        pytest.param("http://127.0.0.1:8081/jwks.json", id="http-loopback-ip"),
        pytest.param("http://localhost:8081/jwks.json", id="http-localhost"),
    ],
)
def test_jwks_url_accepted(url: str) -> None:
    assert EdgeSettings.from_env({"JWT_JWKS_URL": url}).jwt_jwks_url == url


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        pytest.param("https://app.example.com", "https://app.example.com", id="plain"),
        pytest.param("https://App.Example.COM", "https://app.example.com", id="uppercase-host"),
        pytest.param("HTTPS://app.example.com", "https://app.example.com", id="uppercase-scheme"),
        pytest.param("https://app.example.com/", "https://app.example.com", id="trailing-slash"),
        pytest.param("https://app.example.com:443", "https://app.example.com", id="default-https-port"),
        pytest.param("http://app.example.com:80", "http://app.example.com", id="default-http-port"),
        pytest.param("http://localhost:3000", "http://localhost:3000", id="dev-port"),
        pytest.param("http://[::1]:3000", "http://[::1]:3000", id="ipv6"),
    ],
)
def test_origin_normalization(raw: str, normalized: str) -> None:
    assert parse_origin(raw) == normalized


def test_origins_deduplicated_in_order() -> None:
    settings = EdgeSettings.from_env(
        env(CORS_ALLOWED_ORIGINS="https://b.example.com,https://a.example.com,https://B.example.com/,")
    )
    assert settings.cors_allowed_origins == ("https://b.example.com", "https://a.example.com")


def test_settings_are_frozen_and_hide_secrets() -> None:
    settings = EdgeSettings.from_env(env(REDIS_URL="redis://:hunter2@redis:6379/0"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.trusted_proxy_count = 3  # type: ignore[misc]
    assert SECRET not in repr(settings)
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param(env(JWT_AUDIENCE="aud", JWT_ISSUER="iss"), id="hs256"),
        pytest.param({"JWT_PUBLIC_KEY": rsa_pem()}, id="rs256"),
        pytest.param({"JWT_PUBLIC_KEY": ec_pem(ec.SECP256R1())}, id="es256"),
        pytest.param({"JWT_JWKS_URL": "https://auth.example.com/jwks.json"}, id="jwks"),
    ],
)
def test_verifier_builds_from_each_key_source(environ: dict[str, str]) -> None:
    assert isinstance(JwtVerifier.from_settings(EdgeSettings.from_env(environ)), JwtVerifier)


# --- refused: each error names its variable ------------------------------------------------------

REFUSED = [
    pytest.param({}, "JWT_SECRET/JWT_PUBLIC_KEY/JWT_JWKS_URL", id="no-key-source"),
    pytest.param(env(JWT_JWKS_URL="https://auth.example.com/jwks.json"), "exactly one", id="two-key-sources"),
    pytest.param({"JWT_SECRET": "short"}, "JWT_SECRET", id="secret-too-short"),
    pytest.param({"JWT_SECRET": rsa_pem()}, "JWT_SECRET", id="secret-is-a-pem"),
    pytest.param(
        {"JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----"},
        "JWT_PUBLIC_KEY",
        id="public-key-garbage-pem",
    ),
    pytest.param({"JWT_PUBLIC_KEY": "/nonexistent/jwt.pem"}, "JWT_PUBLIC_KEY", id="public-key-missing-file"),
    pytest.param({"JWT_PUBLIC_KEY": ec_pem(ec.SECP384R1())}, "JWT_PUBLIC_KEY", id="public-key-p384"),
    pytest.param({"JWT_JWKS_URL": "http://auth.example.com/jwks.json"}, "JWT_JWKS_URL", id="jwks-plain-http"),
    pytest.param({"JWT_JWKS_URL": "ftp://auth.example.com/jwks.json"}, "JWT_JWKS_URL", id="jwks-ftp"),
    pytest.param({"JWT_JWKS_URL": "auth.example.com/jwks.json"}, "JWT_JWKS_URL", id="jwks-no-scheme"),
    pytest.param(env(JWT_AUDIENCE="a" * 1025), "JWT_AUDIENCE", id="audience-too-long"),
    pytest.param(env(JWT_ISSUER="i" * 1025), "JWT_ISSUER", id="issuer-too-long"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://app.example.com/path"), "CORS_ALLOWED_ORIGINS", id="origin-path"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="*"), "CORS_ALLOWED_ORIGINS", id="origin-wildcard"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://*.example.com"), "CORS_ALLOWED_ORIGINS", id="origin-glob"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="null"), "CORS_ALLOWED_ORIGINS", id="origin-null"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="app.example.com"), "CORS_ALLOWED_ORIGINS", id="origin-no-scheme"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="ftp://app.example.com"), "CORS_ALLOWED_ORIGINS", id="origin-ftp"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://app.example.com?x=1"), "CORS_ALLOWED_ORIGINS", id="origin-query"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://app.example.com#x"), "CORS_ALLOWED_ORIGINS", id="origin-fragment"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://u:p@app.example.com"), "CORS_ALLOWED_ORIGINS", id="origin-userinfo"),
    pytest.param(env(CORS_ALLOWED_ORIGINS="https://app.example.com:99999"), "CORS_ALLOWED_ORIGINS", id="origin-port"),
    pytest.param(
        env(CORS_ALLOWED_ORIGINS=",".join(f"https://a{i}.example.com" for i in range(65))),
        "CORS_ALLOWED_ORIGINS",
        id="too-many-origins",
    ),
    pytest.param(env(REDIS_URL="http://redis:6379"), "REDIS_URL", id="redis-wrong-scheme"),
    pytest.param(env(RATE_LIMIT_PER_USER_PER_MINUTE="lots"), "RATE_LIMIT_PER_USER_PER_MINUTE", id="user-limit-text"),
    pytest.param(env(RATE_LIMIT_PER_USER_PER_MINUTE="0"), "RATE_LIMIT_PER_USER_PER_MINUTE", id="user-limit-zero"),
    pytest.param(env(RATE_LIMIT_PER_USER_PER_MINUTE="1.5"), "RATE_LIMIT_PER_USER_PER_MINUTE", id="user-limit-float"),
    pytest.param(env(RATE_LIMIT_PER_IP_PER_MINUTE="-1"), "RATE_LIMIT_PER_IP_PER_MINUTE", id="ip-limit-negative"),
    pytest.param(env(RATE_LIMIT_PER_IP_PER_MINUTE="100001"), "RATE_LIMIT_PER_IP_PER_MINUTE", id="ip-limit-too-big"),
    pytest.param(env(TRUSTED_PROXY_COUNT="-1"), "TRUSTED_PROXY_COUNT", id="proxy-count-negative"),
    pytest.param(env(TRUSTED_PROXY_COUNT="9"), "TRUSTED_PROXY_COUNT", id="proxy-count-too-big"),
    pytest.param(env(TRUSTED_PROXY_COUNT="one"), "TRUSTED_PROXY_COUNT", id="proxy-count-text"),
]


@pytest.mark.parametrize(("environ", "variable"), REFUSED)
def test_refused_with_a_line_naming_the_variable(environ: dict[str, str], variable: str) -> None:
    assert variable in config_error(environ)


def test_two_key_sources_are_both_named() -> None:
    message = config_error({"JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": rsa_pem()})
    assert "found: JWT_SECRET, JWT_PUBLIC_KEY" in message


def test_secret_values_are_never_echoed() -> None:
    assert "hunter2" not in config_error(env(REDIS_URL="http://:hunter2@redis:6379"))
    short_secret = "s3cr3t-but-short"
    assert short_secret not in config_error({"JWT_SECRET": short_secret})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
