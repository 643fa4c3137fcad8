"""Reading the keys a token is verified with: a PEM public key (RS256 / ES256) or an HS256 secret.

Both the settings (edge_config.py, at start-up: a bad key stops the gateway) and the verifier (auth.py)
read keys the same way; this module imports neither, so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HS256_SECRET_BYTES_MIN: Final = 32  # RFC 7518 §3.2: at least the hash output size.
RSA_KEY_BITS_MIN: Final = 2048
_ALGORITHM_FOR_EC_CURVE: Final[Mapping[str, str]] = {ec.SECP256R1.name: "ES256"}


def classify_public_key(pem: str) -> tuple[rsa.RSAPublicKey | ec.EllipticCurvePublicKey, str]:
    """Load a PEM public key and return it with the one algorithm it may verify; ValueError otherwise."""
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError("not a PEM public key (expected -----BEGIN PUBLIC KEY-----)") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_KEY_BITS_MIN:
            raise ValueError(f"RSA key has {key.key_size} bits; at least {RSA_KEY_BITS_MIN} required")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _ALGORITHM_FOR_EC_CURVE.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported; expected P-256 (ES256)")
        return key, algorithm
    raise ValueError(f"{type(key).__name__} keys are not supported; expected RSA (RS256) or EC P-256 (ES256)")


def check_hs256_secret(secret: str) -> bytes:
    """Return the secret's bytes, or ValueError if it is too short or is really a PEM key."""
    secret_bytes = secret.encode("utf-8")
    if len(secret_bytes) < HS256_SECRET_BYTES_MIN:
        raise ValueError(f"HS256 secret has {len(secret_bytes)} bytes; at least {HS256_SECRET_BYTES_MIN} required")
    if secret.lstrip().startswith("-----BEGIN"):
        raise ValueError("looks like a PEM key; an HS256 secret must be a random string (use JWT_PUBLIC_KEY)")
    return secret_bytes
