"""Site credentials: compact JWTs the hub signs with Ed25519 and every site checks.

A credential (RFC 7519, ``alg`` EdDSA as in RFC 8037) says who carries it: a site (``site`` set)
or the hub itself (subject ``hub``, ``site`` null). The hub signs; sites hold only the public
keys (``PublicKey``, from the routing table), so any site can check any other site's credential
without asking the hub, and with the hub away. A key's id (``kid``, in the JWT header) is the start
of its RFC 7638 thumbprint: stable, and the same wherever it is computed. Several keys may be
valid at once, which is how the hub rotates its key.

The compact serialization (RFC 7515 7.1) is written and read here, for the one algorithm, over
``cryptography``'s Ed25519: every check of the claims is this module's anyway, and a JWT library
with its algorithms and key-set client would be a tenth of a site agent's memory.

Pure: no network I/O, and the time is always an argument.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgefleet.model import PublicKey
from edgefleet.model.identity import raw_public_key

ISSUER = "edgefleet"
"""The ``iss`` of every credential."""
HUB_SUBJECT = "hub"
"""The subject of the hub's own credential (its ``site`` is None)."""
ALGORITHM = "EdDSA"
"""The JWS algorithm of credentials (RFC 8037): Ed25519 signatures."""
LEEWAY = timedelta(seconds=30)
"""How far a site's clock may be behind the hub's before a fresh credential looks expired."""
KID_LENGTH = 16
"""Characters of the RFC 7638 thumbprint that make a key id (96 bits)."""

_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class CredentialError(Exception):
    """A credential that does not hold; ``reason`` says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """Why, e.g. ``expired at 2025-01-01T00:00:00Z`` or ``signed by an unknown key kid=…``."""


@dataclass(frozen=True)
class CredentialClaims:
    """What a credential that checked out says about its bearer."""

    subject: str
    """Who: ``hub`` for the hub's own credential, else the name the hub gave the site."""
    site: str | None
    """The site the credential is for; None for the hub's own credential."""
    jti: str
    """The credential's id: what a revocation names."""
    expires: datetime
    """When it stops being valid (UTC; a site accepts it ``LEEWAY`` longer)."""

    @property
    def is_hub(self) -> bool:
        """Whether this is the hub's own credential."""
        return self.site is None and self.subject == HUB_SUBJECT


def key_id(public: PublicKey | str) -> str:
    """The key id of an Ed25519 public key (or its JWK ``x``): its RFC 7638 thumbprint, cut to
    ``KID_LENGTH`` characters."""
    x = public if isinstance(public, str) else public.x
    # RFC 7638 3.2: the required members, in lexicographic order, no whitespace.
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return _b64url(hashlib.sha256(members.encode()).digest())[:KID_LENGTH]


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 private key of the hub: it signs credentials. Equal keys have equal ``kid``."""

    private: Ed25519PrivateKey = field(compare=False)
    """The private key itself: never logged, stored only as ``to_pem()``."""
    kid: str = field(init=False)
    """The key id credentials carry in their header (``key_id`` of the public key)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", key_id(_x(self.private.public_key())))

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """The key in ``data`` (unencrypted PKCS#8 PEM, as ``to_pem`` writes); ValueError if
        it holds no Ed25519 private key."""
        # Key files are the hub's business: a site only checks signatures, without the key
        # formats (PEM, SSH, PKCS#12) loaded.
        from cryptography.hazmat.primitives import serialization

        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"not an Ed25519 key but {type(private).__name__}")
        return cls(private)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: keep it as secret as the key."""
        from cryptography.hazmat.primitives import serialization

        return self.private.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def public(self) -> PublicKey:
        """The public half, as published in the routing table."""
        return PublicKey(kid=self.kid, x=_x(self.private.public_key()))

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def issue(
    key: SigningKey,
    *,
    subject: str,
    site: str | None,
    ttl: timedelta,
    now: datetime,
    jti: str,
) -> str:
    """A credential for ``site`` (None: the hub's own, whose subject must be ``hub``), valid for
    ``ttl`` from ``now``, with the id ``jti`` (keep it: revoking names it)."""
    if site is None and subject != HUB_SUBJECT:
        raise ValueError(f"a credential without a site is the hub's: subject {HUB_SUBJECT!r}")
    if not subject or not jti:
        raise ValueError("a credential needs a subject and an id (jti)")
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, not {ttl}")
    issued = _utc(now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "site": site,
        "jti": jti,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
    signed = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims))}"
    return f"{signed}.{_b64url(key.private.sign(signed.encode('ascii')))}"


def verify(
    token: str,
    keys: Iterable[PublicKey],
    *,
    now: datetime,
    revoked: Collection[str] = (),
) -> CredentialClaims:
    """The claims of ``token`` if one of ``keys`` signed it, it has not expired at ``now``
    (give or take ``LEEWAY``) and its id is not in ``revoked``; else ``CredentialError``."""
    claims = _signed_claims(token, {k.kid: k for k in keys})
    _check_current(claims, now=now, revoked=revoked)
    return claims


class Keyring:
    """The public keys credentials are checked against, the revoked ids, and the credentials
    whose signature was checked already.

    A signature check costs about 0.2 ms; a site checks the same few neighbours' credentials on
    every spilled request, so a credential whose signature held is remembered (until the keys
    change) and only its expiry and revocation are checked again. Only credentials a known key
    signed are remembered: nobody without a key can fill the memory.
    """

    def __init__(
        self, keys: Iterable[PublicKey] = (), revoked: Iterable[str] = (), *, remember: int = 1024
    ) -> None:
        """Check against ``keys``, refusing the ids in ``revoked``; remember at most
        ``remember`` credentials."""
        self._keys: dict[str, PublicKey] = {}
        self._revoked: frozenset[str] = frozenset()
        self._checked: dict[str, CredentialClaims] = {}
        self._remember = remember
        self.update(keys, revoked)

    @property
    def keys(self) -> tuple[PublicKey, ...]:
        """The keys credentials are checked against."""
        return tuple(self._keys.values())

    def update(self, keys: Iterable[PublicKey], revoked: Iterable[str]) -> None:
        """Take a new set of keys and revoked ids (from a routing table, say)."""
        by_kid = {k.kid: k for k in keys}
        if by_kid != self._keys:
            # A key that went away must take what it signed with it.
            self._keys = by_kid
            self._checked.clear()
        self._revoked = frozenset(revoked)

    def revoke(self, ids: Iterable[str]) -> None:
        """Refuse these ids too, from now on (until the next ``update`` says otherwise)."""
        self._revoked = self._revoked | frozenset(ids)

    def verify(self, token: str, *, now: datetime) -> CredentialClaims:
        """``verify(token, self.keys, now=now, revoked=...)``, remembering signatures."""
        claims = self._checked.get(token)
        if claims is None:
            claims = _signed_claims(token, self._keys)
            if len(self._checked) >= self._remember:
                del self._checked[next(iter(self._checked))]
            self._checked[token] = claims
        _check_current(claims, now=now, revoked=self._revoked)
        return claims


def _signed_claims(token: str, keys: Mapping[str, PublicKey]) -> CredentialClaims:
    """The claims of ``token`` if a key of ``keys`` signed it and they are well formed."""
    header, payload, signed, signature = _jws_parts(token)
    if header.get("alg") != ALGORITHM:
        raise CredentialError(f"malformed: not signed with {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise CredentialError("malformed: no key id (kid) in its header")
    known = keys.get(kid)
    if known is None:
        raise CredentialError(f"signed by an unknown key kid={kid}")
    public = Ed25519PublicKey.from_public_bytes(raw_public_key(known.x))
    try:
        public.verify(signature, signed)
    except InvalidSignature:
        raise CredentialError(f"altered: its signature does not match key kid={kid}") from None
    # Time and issuer are checked by the callers, against their clock.
    try:
        claims = json.loads(payload)
    except ValueError:
        raise CredentialError("malformed: its claims are not JSON") from None
    if not isinstance(claims, dict):
        raise CredentialError("malformed: its claims are not a JSON object")
    return _claims(claims)


def _jws_parts(token: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """The header, the payload, the signing input and the signature of a compact JWS (RFC 7515
    7.1: three base64url parts without padding, the first a JSON object); nothing is checked
    against a key here."""
    parts = token.split(".")
    if len(parts) != 3:
        raise CredentialError("malformed: not a signed JWT")
    try:
        header = json.loads(_unb64url(parts[0]))
        payload, signature = _unb64url(parts[1]), _unb64url(parts[2])
    except ValueError:
        raise CredentialError("malformed: not a signed JWT") from None
    if not isinstance(header, dict):
        raise CredentialError("malformed: its header is not a JSON object")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _claims(payload: Mapping[str, Any]) -> CredentialClaims:
    if payload.get("iss") != ISSUER:
        raise CredentialError(f"malformed: not issued by {ISSUER}")
    subject, site, jti, exp = (payload.get(k) for k in ("sub", "site", "jti", "exp"))
    if not isinstance(subject, str) or not subject:
        raise CredentialError("malformed: no subject (sub)")
    if site is not None and (not isinstance(site, str) or not site):
        raise CredentialError("malformed: site is not a site name")
    if not isinstance(jti, str) or not jti:
        raise CredentialError("malformed: no id (jti)")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise CredentialError("malformed: no expiry (exp)")
    try:
        expires = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise CredentialError("malformed: expiry (exp) out of range") from None
    return CredentialClaims(subject=subject, site=site, jti=jti, expires=expires)


def _check_current(claims: CredentialClaims, *, now: datetime, revoked: Collection[str]) -> None:
    if _utc(now) > claims.expires + LEEWAY:
        raise CredentialError(f"expired at {claims.expires:%Y-%m-%dT%H:%M:%SZ}")
    if claims.jti in revoked:
        raise CredentialError(f"revoked (jti={claims.jti})")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone: pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


def _x(public: Ed25519PublicKey) -> str:
    return _b64url(public.public_bytes_raw())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(part: str) -> bytes:
    """base64url without padding (RFC 7515 2); ValueError (``binascii.Error``) for anything
    else."""
    if "=" in part:
        raise ValueError("padded base64url")
    return base64.b64decode(part + "=" * (-len(part) % 4), altchars=b"-_", validate=True)


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
