"""User and admin authentication for the HTTP edge: `Authorization: Bearer <JWT>` verified with PyJWT.

The host app issues the tokens. Exactly one key source is configured (see `edge_config`):

- an HS256 shared secret (`JWT_SECRET`) -> only `HS256` is accepted;
- a PEM public key (`JWT_PUBLIC_KEY`): RSA (>= 2048 bits) -> only `RS256`, EC P-256 -> only `ES256`;
- a JWKS URL (`JWT_JWKS_URL`): each token's `kid` picks a key, and that key's type alone fixes the
  algorithm (RSA -> `RS256`, EC P-256 -> `ES256`; symmetric `oct` keys are refused).

The allow-list is fixed by the key, never read from the token, so `alg: none` and the HS256-with-
a-public-key confusion attack are refused. `exp` and `sub` are required; `aud` / `iss` are required
and checked when `JWT_AUDIENCE` / `JWT_ISSUER` are set (when the audience is not set, a token's
`aud` is not checked). Clock leeway is bounded by `LEEWAY_SECONDS_MAX`.

A refused token's 401 says which check failed (`TOKEN_REFUSALS`: expired, not yet valid, a required
claim missing, audience, issuer, signature, algorithm, malformed), never a key, a claim's value or the
configured audience/issuer. PyJWT verifies the signature before any claim, so only a token signed with
the right key learns which claim failed; anyone else learns "signature".

`sub` must be a user id the ledger can store (services.stripe_bridge.events.is_valid_user_id: 1 to
128 printable ASCII characters without spaces): every other subject (missing, empty, too long, a space
or a control character, not a string) is the same mistake and gets the same 401.

The `roles` claim: absent or null means no roles; otherwise it must be a list of strings (at most
`ROLES_MAX`), and anything else is refused with 401. A malformed claim means the token is not the
one the host app promised; guessing (a string "admin" is iterable too) could grant or hide a role.

Outcomes: no token / invalid token -> 401 `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`;
valid token without the role -> 403 `PERMISSION_DENIED`; JWKS endpoint unreachable -> 503
`UNAVAILABLE` (the user's token may be fine: a 401 would log them out for our outage).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.stripe_bridge.events import USER_ID_CHARS_MAX, is_valid_user_id
from services.webhook_gateway.errors import HttpError
from services.webhook_gateway.jwt_keys import check_hs256_secret, classify_public_key

if TYPE_CHECKING:
    from services.webhook_gateway.edge_config import EdgeSettings

logger = logging.getLogger(__name__)

TOKEN_BYTES_MAX: Final = 8 * 1024
LEEWAY_SECONDS_DEFAULT: Final = 10
LEEWAY_SECONDS_MAX: Final = 30
SUBJECT_CHARS_MAX: Final = USER_ID_CHARS_MAX  # `sub` is the ledger's user id.
ROLES_MAX: Final = 32
ROLE_CHARS_MAX: Final = 64
ADMIN_ROLE: Final = "admin"

JWKS_FETCH_TIMEOUT_SECONDS: Final = 5.0
JWKS_WAIT_SECONDS_MAX: Final = 10.0
JWKS_CACHE_LIFESPAN_SECONDS: Final = 300.0
JWKS_KEYS_CACHED_MAX: Final = 16
JWKS_REFRESH_COOLDOWN_SECONDS: Final = 30.0  # Bounds refetches triggered by unknown `kid`s.
JWKS_RETRY_AFTER_SECONDS: Final = 5

_BEARER_SCHEME: Final = "bearer"

# Which check refused a token, most specific class first (PyJWT's classes subclass each other):
# (class, the check's name for the log line, the 401 message). Messages name the check, never a value.
TOKEN_REFUSALS: Final[tuple[tuple[type[jwt.PyJWTError], str, str], ...]] = (
    (jwt.ExpiredSignatureError, "expired", "token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "audience", "token audience (aud) is not this service's"),
    (jwt.InvalidIssuerError, "issuer", "token issuer (iss) is not the one this service trusts"),
    (jwt.InvalidSignatureError, "signature", "token signature does not verify with this service's key"),
    (jwt.InvalidAlgorithmError, "algorithm", "token algorithm is not the one this service's key allows"),
    (jwt.DecodeError, "malformed", "token is not a well-formed JWT"),
)


@dataclass(frozen=True)
class Principal:
    """The verified caller: `user_id` and `subject` are both the token's `sub` (the host app's user id)."""

    user_id: str
    roles: frozenset[str]
    subject: str

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def unauthenticated(message: str, *, token_present: bool = True) -> HttpError:
    # RFC 6750 §3: no error attribute when the request carried no credentials at all.
    challenge = 'Bearer error="invalid_token"' if token_present else "Bearer"
    return HttpError(401, "UNAUTHENTICATED", message, {"WWW-Authenticate": challenge})


def permission_denied(message: str) -> HttpError:
    return HttpError(403, "PERMISSION_DENIED", message, {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


def _jwks_unavailable() -> HttpError:
    return HttpError(
        503, "UNAVAILABLE", "token keys are unavailable; retry later", {"Retry-After": str(JWKS_RETRY_AFTER_SECONDS)}
    )


class _KeySource(Protocol):
    async def resolve(self, token: str) -> tuple[Any, Sequence[str]]:
        """The verification key for this token and the algorithms it may use."""


@dataclass(frozen=True)
class _StaticKey:
    key: Any
    algorithms: tuple[str, ...]

    async def resolve(self, token: str) -> tuple[Any, Sequence[str]]:
        return self.key, self.algorithms


class _JwksKeys:
    """Keys from a JWKS endpoint; PyJWKClient caches the set and the keys, fetches in a worker thread."""

    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(
            url,
            cache_keys=True,
            max_cached_keys=JWKS_KEYS_CACHED_MAX,
            cache_jwk_set=True,
            lifespan=JWKS_CACHE_LIFESPAN_SECONDS,
            timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS,
        )

    async def resolve(self, token: str) -> tuple[Any, Sequence[str]]:
        # PyJWKClient uses blocking urllib: run it off the event loop, and bound our wait.
        fetch = asyncio.to_thread(self._client.get_signing_key_from_jwt, token)
        try:
            signing_key = await asyncio.wait_for(fetch, timeout=JWKS_WAIT_SECONDS_MAX)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, TimeoutError) as exc:
            logger.warning("JWKS endpoint unavailable: %s", type(exc).__name__)
            raise _jwks_unavailable() from exc
        except jwt.PyJWTError as exc:  # Unknown kid, undecodable header, unusable key.
            logger.info("token refused: %s", "key_id", extra={"check": "key_id"})
            raise unauthenticated("token key id (kid) is not among this service's keys") from exc
        return signing_key, (_jwk_algorithm(signing_key),)


def _jwk_algorithm(signing_key: jwt.PyJWK) -> str:
    """The one algorithm a JWKS key may verify, from its key type; never a symmetric key."""
    key = signing_key.key
    if isinstance(key, rsa.RSAPublicKey) and signing_key.algorithm_name == "RS256":
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and signing_key.algorithm_name == "ES256":
        return "ES256"
    raise unauthenticated("token is invalid")


class JwtVerifier:
    """Verifies bearer tokens into a `Principal`; build it once with one of the constructors."""

    def __init__(
        self,
        keys: _KeySource,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_seconds: int = LEEWAY_SECONDS_DEFAULT,
    ) -> None:
        assert 0 <= leeway_seconds <= LEEWAY_SECONDS_MAX, leeway_seconds
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway_seconds = leeway_seconds
        required = ["exp", "sub"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
        self._options: dict[str, Any] = {
            "require": required,
            "verify_aud": audience is not None,
            "enforce_minimum_key_length": True,
        }

    @classmethod
    def hs256(cls, secret: str, *, audience: str | None = None, issuer: str | None = None) -> JwtVerifier:
        return cls(_StaticKey(check_hs256_secret(secret), ("HS256",)), audience=audience, issuer=issuer)

    @classmethod
    def public_key(cls, pem: str, *, audience: str | None = None, issuer: str | None = None) -> JwtVerifier:
        key, algorithm = classify_public_key(pem)
        return cls(_StaticKey(key, (algorithm,)), audience=audience, issuer=issuer)

    @classmethod
    def jwks(cls, url: str, *, audience: str | None = None, issuer: str | None = None) -> JwtVerifier:
        return cls(_JwksKeys(url), audience=audience, issuer=issuer)

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> JwtVerifier:
        audience, issuer = settings.jwt_audience, settings.jwt_issuer
        if settings.jwt_secret is not None:
            return cls.hs256(settings.jwt_secret, audience=audience, issuer=issuer)
        if settings.jwt_public_key_pem is not None:
            return cls.public_key(settings.jwt_public_key_pem, audience=audience, issuer=issuer)
        assert settings.jwt_jwks_url is not None, "EdgeSettings guarantees exactly one key source"
        return cls.jwks(settings.jwt_jwks_url, audience=audience, issuer=issuer)

    async def verify(self, token: str) -> Principal:
        """The token's principal, or HttpError 401 (503 if the JWKS endpoint is down)."""
        if len(token) > TOKEN_BYTES_MAX or not token.isascii():
            raise unauthenticated("token is too long or not ASCII")  # Refused before any parsing.
        key, algorithms = await self._keys.resolve(token)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_seconds,
                options=self._options,  # type: ignore[arg-type]  # PyJWT's Options TypedDict
            )
        except jwt.PyJWTError as exc:
            check, message = refusal_of(exc)
            logger.info("token refused: %s", check, extra={"check": check})
            raise unauthenticated(message) from exc
        return principal_from_claims(payload)


def refusal_of(exc: jwt.PyJWTError) -> tuple[str, str]:
    """The failed check's name and the 401 message for one of PyJWT's refusals."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        # The claim's name comes from our own `require` list (exp, sub, aud, iss): nothing of the token's.
        return f"missing_{exc.claim}", f"token lacks the required {exc.claim} claim"
    for error_class, check, message in TOKEN_REFUSALS:
        if isinstance(exc, error_class):
            return check, message
    return "invalid", "token is invalid"


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Check `sub` and `roles` (see the module docstring) and build the principal; 401 otherwise."""
    subject = claims.get("sub")
    if not is_valid_user_id(subject):
        logger.info("token refused: %s", "subject", extra={"check": "subject"})
        raise unauthenticated(f"token subject (sub) is not a user id: {_SUBJECT_RULE}")
    assert isinstance(subject, str)
    return Principal(user_id=subject, roles=_roles_from_claim(claims.get("roles")), subject=subject)


_SUBJECT_RULE: Final = f"1 to {SUBJECT_CHARS_MAX} printable ASCII characters without spaces"


def _roles_from_claim(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > ROLES_MAX:
        raise unauthenticated("token roles claim must be a list of strings")
    if not all(isinstance(role, str) and 0 < len(role) <= ROLE_CHARS_MAX for role in value):
        raise unauthenticated("token roles claim must be a list of strings")
    return frozenset(value)


# --- aiohttp glue -------------------------------------------------------------------------------

JWT_VERIFIER_KEY: Final = web.AppKey("jwt_verifier", JwtVerifier)


@dataclass(frozen=True)
class _AuthOutcome:
    principal: Principal | None
    error: HttpError | None


_AUTH_OUTCOME_KEY: Final = web.RequestKey("webhook_gateway_auth_outcome", _AuthOutcome)


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: Bearer <token>`; 401 if absent, malformed or over-long."""
    header = request.headers.get("Authorization")
    if header is None:
        raise unauthenticated("missing bearer token", token_present=False)
    if len(header) > len(_BEARER_SCHEME) + 1 + TOKEN_BYTES_MAX:
        raise unauthenticated("token is too long or not ASCII")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != _BEARER_SCHEME or not token:
        raise unauthenticated("expected Authorization: Bearer <token>", token_present=False)
    return token


async def authenticate(request: web.Request) -> Principal:
    """The request's principal (verified once per request, then memoized); HttpError otherwise."""
    outcome = request.get(_AUTH_OUTCOME_KEY)
    if outcome is None:
        try:
            outcome = _AuthOutcome(await request.app[JWT_VERIFIER_KEY].verify(bearer_token(request)), None)
        except HttpError as exc:
            outcome = _AuthOutcome(None, exc)
        request[_AUTH_OUTCOME_KEY] = outcome
    if outcome.error is not None:
        raise outcome.error
    assert outcome.principal is not None
    return outcome.principal


async def require_user(request: web.Request) -> Principal:
    """Any authenticated user (an admin is a user too)."""
    return await authenticate(request)


async def require_admin(request: web.Request) -> Principal:
    """An authenticated user holding the `admin` role; 403 for any other user."""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise permission_denied(f"this route requires the {ADMIN_ROLE} role")
    return principal


async def authenticated_user_id(request: web.Request) -> str | None:
    """The verified user id, or None when the request is not authenticated (for the rate limiter)."""
    try:
        return (await authenticate(request)).user_id
    except HttpError:
        return None
