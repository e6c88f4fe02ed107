"""The operator's identity provider: its JWTs (OIDC ID or access tokens) as hub principals.

The provider signs tokens with keys it publishes as a JWKS (RFC 7517), over HTTPS or, for
air-gapped fleets, as a file copied next to the hub. ``OidcVerifier.verify`` checks a token's
signature with those keys (PyJWT does the cryptography), then its claims (RFC 7519 4.1: ``exp``,
``nbf``, ``iat``, ``iss``, ``aud``), and turns it into a ``Principal`` whose role and tenants come
from claims the operator names in ``OidcConfig``.

Layout:

- pure parts: ``OidcConfig`` (validated when made), ``looks_like_jwt`` and ``parse_header``,
  ``parse_jwks``, ``check_claims``, ``principal_from_claims`` and ``jwks_fetch_due`` (when the
  keys may be fetched again);
- the I/O edge, a function returning the JWKS document: ``fetch_jwks`` (httpx, short timeout)
  or ``read_jwks_file``; tests pass any function instead;
- ``OidcVerifier``: the key cache and the one place that fetches. Safe to call from several
  threads (the hub verifies in worker threads): at most one fetch runs at a time.

Only asymmetric algorithms are accepted: with ``none`` anyone could forge a token, and with
``HS*`` anyone holding the provider's *public* key could (algorithm confusion). Tokens never
reach a log or an error message; key ids and issuers do, shortened.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import yaml

from edgefleet.identity import TENANT_BOUND, Principal, Role, Via

log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
"""What providers sign with in practice: RSA (nearly all), P-256 and Ed25519 (some)."""

SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES256K", "ES384", "ES512"}
    | {"EdDSA"}
)
"""Every algorithm ``algorithms`` may name: the asymmetric ones (RFC 7518 3.1, RFC 8037)."""

OIDC_ROLES = (Role.ADMIN, Role.OPERATOR, Role.DEVELOPER, Role.VIEWER)
"""The roles a token may carry, strongest first (a site's role comes only from its credential)."""

JWKS_TIMEOUT = 5.0
"""Seconds a JWKS fetch may take, connecting and reading together: a request waits on it."""

JWKS_MAX_BYTES = 1024 * 1024
"""Largest JWKS document read (real ones are a few kilobytes)."""

MAX_TOKEN_BYTES = 16 * 1024
"""Longest token looked at; HTTP servers refuse longer header lines anyway."""

_LATEST_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z: the last second a ``datetime`` holds."""

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
# One algorithm of each family builds the key object; every algorithm of the family uses it.
_FAMILY_LOADER = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


class OidcError(Exception):
    """A token was refused; the message says why in words a person understands (401)."""


class OidcUnavailable(OidcError):
    """The provider's keys could not be had: the token may be fine, try again later (503)."""


class OidcConfigError(ValueError):
    """An ``OidcConfig`` field is wrong; ``field`` names it (the Python name)."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class OidcConfig:
    """How the hub trusts the operator's OIDC provider. Checked when made (``OidcConfigError``)."""

    issuer: str
    """The provider's issuer, exactly as in its tokens' ``iss`` claim
    (``https://login.example.com/realms/edge``)."""
    audience: str
    """The audience the hub's tokens are made for (the client id at the provider); a token's
    ``aud`` must name it, so that a token minted for another application does not work here."""
    jwks_url: str | None = None
    """Where the provider publishes its keys (``jwks_uri`` of its discovery document). HTTPS, or
    plain HTTP to a loopback address only: keys fetched in the clear could be swapped."""
    jwks_file: Path | None = None
    """A JWKS JSON file instead of ``jwks_url``, for fleets that cannot reach the provider. It is
    read again like a URL is fetched, so replacing the file rotates keys."""
    role_claim: str = "edgefleet_role"
    """The claim holding the role: one of admin, operator, developer, viewer (or a list of
    them: the strongest counts). Ignored when ``group_roles`` is set."""
    tenants_claim: str = "edgefleet_tenants"
    """The claim holding a developer's or viewer's tenants: a list, or a string separated by
    spaces or commas."""
    groups_claim: str = "groups"
    """The claim holding the caller's groups, read when ``group_roles`` is set."""
    group_roles: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType({}))
    """Group to role. When set, the role comes from the groups alone (the strongest mapped role
    of the caller's groups), never from ``role_claim``: one source of truth for roles."""
    subject_claim: str = "sub"
    """The claim that names the caller: ``sub`` (stable, the provider's user id) or ``email``
    (readable; a token saying ``email_verified: false`` is refused)."""
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    """Signature algorithms accepted. Never ``none``, never ``HS*``."""
    leeway: float = 30.0
    """Seconds of clock difference tolerated on ``exp``, ``nbf`` and ``iat``."""
    jwks_refresh: float = 60.0
    """Fewest seconds between two fetches of the keys: a token with an unknown key id triggers a
    fetch at most this often, so a flood of made-up key ids cannot hammer the provider."""
    jwks_max_age: float = 3600.0
    """Seconds keys are used before they are fetched again, so that a key the provider withdrew
    stops working. If that fetch fails, the keys at hand are kept."""
    ca_file: Path | None = None
    """CA certificates (PEM) to trust for ``jwks_url``, for a provider behind a private CA;
    None: the system's."""

    def __post_init__(self) -> None:
        for name in ("issuer", "audience"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise OidcConfigError(name, "required, a non-empty string")
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise OidcConfigError(
                "jwks_url",
                "set jwks_url (the provider's keys over HTTPS) or jwks_file (a JWKS JSON file),"
                " exactly one of them",
            )
        if self.jwks_url is not None:
            _check_jwks_url(self.jwks_url)
        if self.jwks_file is not None:
            object.__setattr__(self, "jwks_file", Path(self.jwks_file))
        if self.ca_file is not None:
            if self.jwks_url is None:
                raise OidcConfigError("ca_file", "applies to jwks_url only; remove it")
            object.__setattr__(self, "ca_file", Path(self.ca_file))
        for name in ("role_claim", "tenants_claim", "groups_claim", "subject_claim"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise OidcConfigError(name, "a claim name, a non-empty string")
        object.__setattr__(self, "group_roles", _check_group_roles(self.group_roles))
        object.__setattr__(self, "algorithms", _check_algorithms(self.algorithms))
        for name in ("leeway", "jwks_refresh", "jwks_max_age"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OidcConfigError(name, f"expected a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise OidcConfigError(name, f"expected 0 or more seconds, got {value}")
        if self.jwks_max_age <= 0:
            raise OidcConfigError("jwks_max_age", "expected more than 0 seconds")

    @classmethod
    def from_file(cls, path: Path) -> OidcConfig:
        """Read a YAML file of camelCase fields (``issuer``, ``jwksUrl``, ``groupRoles``, ...).

        Relative ``jwksFile`` and ``caFile`` paths are taken from the file's directory. Raises
        ValueError naming the file and the field: what is wrong and what was expected.
        """
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping of OIDC settings (issuer, audience, jwksUrl, ...)"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            spec = _FILE_FIELDS.get(key) if isinstance(key, str) else None
            if spec is None:
                raise ValueError(f"{path}: {key}: unknown field{_suggest(key)}")
            name, parse = spec
            try:
                kwargs[name] = parse(value, path.parent)
            except ValueError as exc:
                raise ValueError(f"{path}: {key}: {exc}") from exc
        for key in ("issuer", "audience"):
            if key not in data:
                raise ValueError(f"{path}: {key}: required")
        try:
            return cls(**kwargs)
        except OidcConfigError as exc:
            # The file's names, not Python's, in what the reader is told.
            reason = re.sub(
                r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: _FILE_KEY.get(m[0], m[0]), exc.reason
            )
            raise ValueError(f"{path}: {_FILE_KEY[exc.field]}: {reason}") from exc


def _check_jwks_url(url: str) -> None:
    if not isinstance(url, str):
        raise OidcConfigError("jwks_url", f"expected a URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise OidcConfigError(
        "jwks_url",
        f"{url!r} must be an https:// URL (plain http:// only to a loopback address such as"
        " 127.0.0.1): keys fetched in the clear could be swapped on the way",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_group_roles(group_roles: Mapping[str, Any]) -> Mapping[str, Role]:
    if not isinstance(group_roles, Mapping):
        raise OidcConfigError(
            "group_roles", f"expected a mapping of group to role, not {group_roles!r}"
        )
    checked: dict[str, Role] = {}
    for group, role in group_roles.items():
        if not isinstance(group, str) or not group:
            raise OidcConfigError("group_roles", f"group {group!r}: expected a non-empty string")
        try:
            value = Role(role)
        except ValueError:
            value = None
        if value is Role.SITE:
            raise OidcConfigError(
                "group_roles", f"group {group!r}: role site cannot come from OIDC"
            )
        if value is None:
            raise OidcConfigError(
                "group_roles", f"group {group!r}: role {role!r} is not one of {_ROLE_NAMES}"
            )
        checked[group] = value
    return MappingProxyType(checked)


def _check_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(algorithms, str) or not isinstance(algorithms, Sequence):
        raise OidcConfigError("algorithms", f"expected a list of names, got {algorithms!r}")
    if not algorithms:
        raise OidcConfigError("algorithms", f"name at least one of {_ALGORITHM_NAMES}")
    for name in algorithms:
        if not isinstance(name, str):
            raise OidcConfigError("algorithms", f"expected names, got {name!r}")
        if name.lower() == "none":
            raise OidcConfigError("algorithms", "'none' accepts unsigned tokens: never")
        if name.upper().startswith("HS"):
            raise OidcConfigError(
                "algorithms",
                f"{name} is a shared-secret algorithm: whoever holds the provider's public key"
                f" could forge tokens. Use one of {_ALGORITHM_NAMES}",
            )
        if name not in SUPPORTED_ALGORITHMS:
            raise OidcConfigError("algorithms", f"{name!r} is not one of {_ALGORITHM_NAMES}")
    return tuple(dict.fromkeys(algorithms))


_ROLE_NAMES = ", ".join(OIDC_ROLES)
_ALGORITHM_NAMES = ", ".join(sorted(SUPPORTED_ALGORITHMS))


def _file_str(value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _file_seconds(value: Any, _base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    return float(value)


def _file_path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _file_algorithms(value: Any, _base: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of algorithm names (RS256, ES256, ...), got {value!r}")
    return tuple(value)


def _file_group_roles(value: Any, _base: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"expected a mapping of group name to role ({_ROLE_NAMES})")
    return dict(value)


_FILE_FIELDS: dict[str, tuple[str, Callable[[Any, Path], Any]]] = {
    "issuer": ("issuer", _file_str),
    "audience": ("audience", _file_str),
    "jwksUrl": ("jwks_url", _file_str),
    "jwksFile": ("jwks_file", _file_path),
    "roleClaim": ("role_claim", _file_str),
    "tenantsClaim": ("tenants_claim", _file_str),
    "groupsClaim": ("groups_claim", _file_str),
    "groupRoles": ("group_roles", _file_group_roles),
    "subjectClaim": ("subject_claim", _file_str),
    "algorithms": ("algorithms", _file_algorithms),
    "leeway": ("leeway", _file_seconds),
    "jwksRefresh": ("jwks_refresh", _file_seconds),
    "jwksMaxAge": ("jwks_max_age", _file_seconds),
    "caFile": ("ca_file", _file_path),
}
_FILE_KEY = {name: key for key, (name, _parse) in _FILE_FIELDS.items()}


def _suggest(key: object) -> str:
    text = str(key)
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), text)
    close = [camel] if camel in _FILE_FIELDS else difflib.get_close_matches(text, _FILE_FIELDS)
    if close:
        return f": did you mean {close[0]!r}?"
    return f" (known: {', '.join(_FILE_FIELDS)})"


# ---------------------------------------------------------------------------------------------
# Tokens and keys: pure


@dataclass(frozen=True)
class JwtHeader:
    """What a token says about its signature, before anything is verified."""

    alg: str
    """The signature algorithm the token claims."""
    kid: str | None
    """The id of the key that signed it; None when the token names none."""


def parse_header(token: str) -> JwtHeader:
    """The header of a compact JWS (three base64url parts); OidcError if ``token`` is not one."""
    if len(token) > MAX_TOKEN_BYTES:
        raise OidcError(f"not a JWT: longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise OidcError("not a JWT: expected three base64url parts separated by dots")
    if not all(_BASE64URL.match(part) for part in parts) or not parts[0] or not parts[1]:
        raise OidcError("not a JWT: its parts are not base64url")
    try:
        header = json.loads(_b64decode(parts[0]))
    except (ValueError, RecursionError):
        raise OidcError("not a JWT: its header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise OidcError("not a JWT: its header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise OidcError("not a JWT: its header has no alg")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise OidcError("not a JWT: its header's kid is not a string")
    return JwtHeader(alg=alg, kid=kid)


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a JWT (three base64url parts, a header with ``alg``).

    Tells a provider's token apart from the hub's own (``efu_...``) without checking anything.
    """
    try:
        parse_header(token)
    except OidcError:
        return False
    return True


def _b64decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class JwksKey:
    """One verification key of the provider's JWKS."""

    kid: str | None
    """Its key id; None when the JWKS entry names none."""
    kty: str
    """Its key type: RSA, EC or OKP."""
    algorithms: frozenset[str]
    """The accepted algorithms it verifies (its ``alg`` if the JWKS says, else its family's)."""
    key: Any
    """The public key object (``cryptography``)."""


def parse_jwks(data: Any, *, accepted: Collection[str]) -> tuple[tuple[JwksKey, ...], list[str]]:
    """The signature keys of a JWKS document usable with ``accepted`` algorithms.

    Returns the keys, and why each other entry was left out (encryption keys, other key types,
    entries holding private material, broken ones). Raises ValueError if ``data`` is no JWKS.
    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS: expected a JSON object with a "keys" list')
    keys: list[JwksKey] = []
    skipped: list[str] = []
    for index, entry in enumerate(data["keys"]):
        if not isinstance(entry, dict):
            skipped.append(f"keys[{index}]: not an object")
            continue
        kid = entry.get("kid")
        name = f"kid={_show(kid)}" if isinstance(kid, str) else f"keys[{index}]"
        problem, algorithms = _key_algorithms(entry, accepted)
        if problem is None and "d" in entry:
            problem = "holds private key material (a provider publishes public keys only)"
        if problem is not None:
            skipped.append(f"{name}: {problem}")
            continue
        kty = entry["kty"]
        try:
            key = jwt.get_algorithm_by_name(_FAMILY_LOADER[kty]).from_jwk(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{name}: not a valid {kty} key ({exc})")
            continue
        keys.append(
            JwksKey(
                kid=kid if isinstance(kid, str) else None,
                kty=kty,
                algorithms=algorithms,
                key=key,
            )
        )
    return tuple(keys), skipped


def _key_algorithms(
    entry: Mapping[str, Any], accepted: Collection[str]
) -> tuple[str | None, frozenset[str]]:
    use = entry.get("use")
    if use is not None and use != "sig":
        return f"use {use!r} is not for signatures", frozenset()
    kty = entry.get("kty")
    if kty == "RSA":
        family = _RSA_ALGORITHMS
    elif kty == "EC":
        crv = _EC_ALGORITHMS.get(str(entry.get("crv")))
        family = frozenset({crv} if crv else set())
    elif kty == "OKP" and entry.get("crv") in ("Ed25519", "Ed448"):
        family = frozenset({"EdDSA"})
    else:
        return f"key type {_show(kty)} (crv {_show(entry.get('crv'))}) cannot verify", frozenset()
    alg = entry.get("alg")
    if alg is not None:
        if alg not in family:
            return f"alg {_show(alg)} does not fit a {kty} key", frozenset()
        family = frozenset({alg})
    usable = family & frozenset(accepted)
    if not usable:
        return f"its algorithms ({', '.join(sorted(family))}) are not accepted", frozenset()
    return None, usable


def select_key(keys: Sequence[JwksKey], header: JwtHeader) -> JwksKey | None:
    """The key that should verify a token with ``header``, or None if the JWKS has none.

    A token naming no ``kid`` is verified only when exactly one key fits its algorithm: a
    provider with several keys must say which one signed.
    """
    if header.kid is None:
        fitting = [k for k in keys if header.alg in k.algorithms]
        return fitting[0] if len(fitting) == 1 else None
    for key in keys:
        if key.kid == header.kid and header.alg in key.algorithms:
            return key
    return None


def jwks_fetch_due(
    *,
    now: float,
    last_attempt: float | None,
    fetched_at: float | None,
    key_found: bool,
    refresh: float,
    max_age: float,
) -> bool:
    """Whether to fetch the provider's keys now (times on one monotonic clock, in seconds).

    Never more often than every ``refresh`` seconds, failed attempts included: neither a flood
    of tokens with made-up key ids nor a provider that is down makes the hub hammer it. Within
    that bound, fetch when the token's key is not among the keys held (rotation), or when the
    keys are older than ``max_age`` (a withdrawn key stops working).
    """
    if last_attempt is None:
        return True
    if now - last_attempt < refresh:
        return False
    if not key_found:
        return True
    return fetched_at is None or now - fetched_at >= max_age


def check_claims(claims: Mapping[str, Any], *, config: OidcConfig, now: datetime) -> None:
    """Refuse (OidcError) a token, whose signature is good, that is not for this hub right now.

    The checks of RFC 7519 4.1 with ``config.leeway`` seconds of clock difference: ``exp`` is
    required and in the future, ``nbf`` and ``iat`` (when present) not in the future, ``iss`` is
    the configured issuer, ``aud`` names the configured audience.
    """
    at = now.timestamp()
    leeway = config.leeway
    exp = _timestamp(claims, "exp")
    if exp is None:
        raise OidcError("the token has no exp claim: tokens must carry an expiry time")
    if at >= exp + leeway:
        raise OidcError(f"token expired at {_iso(exp)} (now {_iso(at)}, leeway {leeway:g}s)")
    nbf = _timestamp(claims, "nbf")
    if nbf is not None and nbf > at + leeway:
        raise OidcError(f"token not valid before {_iso(nbf)} (now {_iso(at)})")
    iat = _timestamp(claims, "iat")
    if iat is not None and iat > at + leeway:
        raise OidcError(
            f"token issued in the future, at {_iso(iat)} (now {_iso(at)}):"
            " the provider's clock or the hub's is wrong"
        )
    iss = claims.get("iss")
    if iss is None:
        raise OidcError(f"the token has no iss claim; the configured issuer is {config.issuer!r}")
    if iss != config.issuer:
        raise OidcError(f"issuer {_show(iss)} is not the configured {config.issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise OidcError(
            f"the token has no audience (aud claim); the configured one is {config.audience!r}"
        )
    if config.audience not in audiences:
        shown = ", ".join(_show(a) for a in audiences[:5]) or "none"
        raise OidcError(
            f"audience {shown} does not include the configured {config.audience!r}:"
            " the token was made for another application"
        )


def principal_from_claims(claims: Mapping[str, Any], *, config: OidcConfig) -> Principal:
    """The principal a token's claims (already checked) describe: subject, role and tenants.

    The role comes from ``config.group_roles`` over the groups claim when that mapping is set,
    else from the role claim. Developers and viewers need at least one tenant.
    """
    subject = claims.get(config.subject_claim)
    if not isinstance(subject, str) or not subject:
        raise OidcError(
            f"claim {config.subject_claim} missing: the provider must name the caller in it"
        )
    if config.subject_claim == "email" and claims.get("email_verified") in (False, "false"):
        raise OidcError(f"email {_show(subject)} is not verified by the provider")
    role = (
        _role_from_groups(claims, config)
        if config.group_roles
        else _role_from_claim(claims, config)
    )
    tenants: tuple[str, ...] = ()
    if role in TENANT_BOUND:
        tenants = _names(claims.get(config.tenants_claim), config.tenants_claim, "tenant names")
        if not tenants:
            raise OidcError(
                f"claim {config.tenants_claim} missing or empty: role {role} acts only in its"
                " tenants, and the provider must send at least one"
            )
    exp = _timestamp(claims, "exp")
    jti = claims.get("jti")
    return Principal(
        subject=subject,
        role=role,
        via=Via.OIDC,
        tenants=tenants,
        token_id=jti if isinstance(jti, str) else None,
        expires=datetime.fromtimestamp(exp, UTC) if exp is not None else None,
    )


def _role_from_claim(claims: Mapping[str, Any], config: OidcConfig) -> Role:
    claim = config.role_claim
    value = claims.get(claim)
    if value is None or value == "" or value == []:
        raise OidcError(f"claim {claim} missing: the provider must send one of {_ROLE_NAMES}")
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise OidcError(f"claim {claim} must be a role name or a list of them, not {_show(value)}")
    named = {v.strip().lower() for v in values}
    if Role.SITE in named:
        raise OidcError("role site cannot come from OIDC: it belongs to sites' credentials")
    for role in OIDC_ROLES:
        if role in named:
            return role
    shown = ", ".join(_show(v) for v in values[:5])
    raise OidcError(f"claim {claim} is {shown}: the provider must send one of {_ROLE_NAMES}")


def _role_from_groups(claims: Mapping[str, Any], config: OidcConfig) -> Role:
    claim = config.groups_claim
    groups = _names(claims.get(claim), claim, "group names")
    mapped = {config.group_roles[g] for g in groups if g in config.group_roles}
    for role in OIDC_ROLES:
        if role in mapped:
            return role
    held = ", ".join(_show(g) for g in groups[:10]) or "none"
    known = ", ".join(_show(g) for g in sorted(config.group_roles)[:10])
    raise OidcError(
        f"no group of the caller maps to a role: claim {claim} holds {held};"
        f" the configured groups are {known}"
    )


def _names(value: Any, claim: str, what: str) -> tuple[str, ...]:
    """A list claim, or a string of names separated by spaces or commas, without repeats."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[str] = re.split(r"[\s,]+", value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise OidcError(
            f"claim {claim} must be a list of {what} or a string of them separated by spaces"
            f" or commas, not {_show(value)}"
        )
    return tuple(dict.fromkeys(item for item in items if item))


def _timestamp(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _LATEST_TIMESTAMP
    ):
        raise OidcError(f"claim {name} is not a time in seconds since 1970: {_show(value)}")
    return float(value)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(value: object, limit: int = 64) -> str:
    """A value from a token, quoted and shortened: it is the sender's text, not ours."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# The I/O edge: where the JWKS comes from


JwksFetch = Callable[[], Any]
"""Returns the JWKS document (parsed JSON); raises OidcUnavailable saying why it cannot."""


def fetch_jwks(
    url: str,
    *,
    ca_file: Path | None = None,
    timeout: float = JWKS_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> Any:
    """GET the provider's JWKS (synchronously: the hub verifies in worker threads).

    ``transport`` replaces the network (``httpx.MockTransport``). Redirects are not followed:
    configure the URL the provider's discovery document gives.
    """
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise OidcUnavailable(f"cannot load the CA file {ca_file}: {exc}") from exc
    body = bytearray()
    try:
        with (
            httpx.Client(
                verify=verify,
                timeout=timeout,
                transport=transport,
                follow_redirects=False,
                headers={"accept": "application/json"},
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise OidcUnavailable(
                    f"the JWKS at {url} answered HTTP {response.status_code}, not 200"
                )
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise OidcUnavailable(
                        f"the JWKS at {url} is larger than {JWKS_MAX_BYTES} bytes"
                    )
    except httpx.HTTPError as exc:
        raise OidcUnavailable(
            f"cannot fetch the JWKS from {url}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise OidcUnavailable(f"the JWKS at {url} is not JSON: {exc}") from exc


def read_jwks_file(path: Path) -> Any:
    """Read a JWKS JSON file (an air-gapped fleet's copy of the provider's keys)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise OidcUnavailable(f"cannot read the JWKS file {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise OidcUnavailable(f"the JWKS file {path} is not JSON: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# The verifier


@dataclass(frozen=True)
class _Keys:
    """The keys held and when they were fetched (replaced whole, so readers need no lock)."""

    keys: tuple[JwksKey, ...] = ()
    fetched_at: float | None = None
    last_attempt: float | None = None
    error: str | None = None


class OidcVerifier:
    """Turns the provider's tokens into principals; holds the provider's keys.

    ``fetch`` returns the JWKS document (default: ``fetch_jwks`` of ``config.jwks_url``, or
    ``read_jwks_file`` of ``config.jwks_file``); ``clock`` is the monotonic clock the fetch
    interval is measured on, ``wall_clock`` the time tokens are checked against.
    """

    def __init__(
        self,
        config: OidcConfig,
        *,
        fetch: JwksFetch | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self._fetch = fetch or _default_fetch(config)
        self._where = (
            f"the JWKS at {config.jwks_url}"
            if config.jwks_url
            else f"the JWKS file {config.jwks_file}"
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._keys = _Keys()
        self._fetch_lock = threading.Lock()
        self._jws = jwt.PyJWS(algorithms=list(config.algorithms))

    def looks_like_jwt(self, token: str) -> bool:
        """Whether ``token`` has the shape of a JWT (see the module function)."""
        return looks_like_jwt(token)

    def verify(self, token: str) -> Principal:
        """The principal ``token`` proves, or OidcError saying why not.

        OidcUnavailable (a subclass) when the provider's keys cannot be had: not the caller's
        fault. May fetch the keys (blocking, at most ``JWKS_TIMEOUT`` seconds).
        """
        header = parse_header(token)
        if header.alg.lower() == "none":
            raise OidcError("unsigned token (alg none): never accepted")
        if header.alg not in self.config.algorithms:
            raise OidcError(
                f"algorithm {_show(header.alg)} is not accepted"
                f" (accepted: {', '.join(self.config.algorithms)})"
            )
        key = self._key_for(header)
        try:
            payload = self._jws.decode(
                token,
                key=key.key,
                algorithms=[header.alg],
                options={"verify_signature": True, "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            raise OidcError(
                f"signature does not match key kid={_show(key.kid)}:"
                " the token was not signed by the provider"
            ) from None
        except jwt.InvalidKeyError as exc:
            raise OidcError(f"key kid={_show(key.kid)} cannot verify the token: {exc}") from None
        except jwt.PyJWTError as exc:
            raise OidcError(f"malformed token: {exc}") from None
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise OidcError("malformed token: its payload is not JSON") from None
        if not isinstance(claims, dict):
            raise OidcError("malformed token: its payload is not a JSON object")
        check_claims(claims, config=self.config, now=self._wall_clock())
        return principal_from_claims(claims, config=self.config)

    def _key_for(self, header: JwtHeader) -> JwksKey:
        held = self._keys
        key = select_key(held.keys, header)
        if self._due(held, key):
            with self._fetch_lock:
                # Another thread may have fetched while this one waited.
                held = self._keys
                key = select_key(held.keys, header)
                if self._due(held, key):
                    held = self._refresh(held)
                    key = select_key(held.keys, header)
        if key is None:
            raise self._no_key(held, header)
        return key

    def _due(self, held: _Keys, key: JwksKey | None) -> bool:
        return jwks_fetch_due(
            now=self._clock(),
            last_attempt=held.last_attempt,
            fetched_at=held.fetched_at,
            key_found=key is not None,
            refresh=self.config.jwks_refresh,
            max_age=self.config.jwks_max_age,
        )

    def _refresh(self, held: _Keys) -> _Keys:
        """Fetch the keys (the fetch lock is held); on failure keep the keys at hand."""
        now = self._clock()
        try:
            keys, skipped = parse_jwks(self._fetch(), accepted=self.config.algorithms)
            if not keys:
                reasons = "; ".join(skipped[:5]) or "it is empty"
                raise OidcUnavailable(
                    f"{self._where} holds no key for {', '.join(self.config.algorithms)}: {reasons}"
                )
        except (OidcUnavailable, ValueError) as exc:
            message = str(exc) if isinstance(exc, OidcUnavailable) else f"{self._where}: {exc}"
            log.warning("OIDC keys not refreshed: %s", message)
            self._keys = _Keys(held.keys, held.fetched_at, now, message)
            return self._keys
        kids = sorted(k.kid or "-" for k in keys)
        if kids != sorted(k.kid or "-" for k in held.keys):
            log.info("OIDC keys from %s: kid %s", self._where, ", ".join(map(_show, kids)))
        for reason in skipped:
            log.debug("OIDC key left out: %s", reason)
        self._keys = _Keys(keys, now, now, None)
        return self._keys

    def _no_key(self, held: _Keys, header: JwtHeader) -> OidcError:
        if not held.keys:
            return OidcUnavailable(
                f"no keys of the provider: {held.error or 'not fetched yet'}"
                f" (fetched again at most every {self.config.jwks_refresh:g}s)"
            )
        if header.kid is None:
            return OidcError(
                f"the token names no key (no kid in its header) and {self._where} does not have"
                f" exactly one key for {header.alg}"
            )
        same = [k for k in held.keys if k.kid == header.kid]
        if same:
            return OidcError(
                f"key kid={_show(header.kid)} is a {same[0].kty} key for"
                f" {', '.join(sorted(same[0].algorithms))}, the token says {_show(header.alg)}"
            )
        age = self._clock() - (held.fetched_at or 0.0)
        stale = f"; the last fetch failed: {held.error}" if held.error else ""
        return OidcError(
            f"no key kid={_show(header.kid)} in the JWKS ({self._where}, fetched {age:.0f}s ago"
            f" and at most every {self.config.jwks_refresh:g}s{stale})"
        )


def _default_fetch(config: OidcConfig) -> JwksFetch:
    if config.jwks_url is not None:
        url, ca_file = config.jwks_url, config.ca_file
        return lambda: fetch_jwks(url, ca_file=ca_file)
    path = config.jwks_file
    assert path is not None  # OidcConfig holds exactly one of the two
    return lambda: read_jwks_file(path)
