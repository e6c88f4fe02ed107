"""Bearer tokens made by the hub: their format, and what the hub keeps of them (a hash).

A token reads ``ef<kind>_<id>_<secret>``: ``efu`` a person's or a tool's token, ``efj`` a site's
one-time join token. The prefix lets secret scanners and people tell them apart at a glance; the
id finds the stored row without a scan; the secret (32 random bytes) is stored only as its
SHA-256. A slow password hash buys nothing for 256 random bits, and a fast one keeps every
request's check to one indexed read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum


class TokenKind(StrEnum):
    """What a stored token is for."""

    USER = "user"
    """Made by ``edgefleet token create`` (or ``hub init``): acts with its role."""
    JOIN = "join"
    """A site's one-time join token: good only to trade for the site's credential."""
    SITE = "site"
    """A site credential (a signed credential; only its id is stored, for revocation)."""


_PREFIX = {TokenKind.USER: "efu", TokenKind.JOIN: "efj"}
_KIND = {prefix: kind for kind, prefix in _PREFIX.items()}
_FORMAT = re.compile(r"^(ef[uj])_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``secret`` is shown once, ``digest`` is what the hub stores."""

    kind: TokenKind
    id: str
    token: str
    digest: str


@dataclass(frozen=True)
class ParsedToken:
    """A token split into its parts (not yet checked against the store)."""

    kind: TokenKind
    id: str
    secret: str


def digest(secret: str) -> str:
    """What the hub stores of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(kind: TokenKind) -> NewToken:
    """A fresh random token of ``kind`` (user or join)."""
    token_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return NewToken(kind, token_id, f"{_PREFIX[kind]}_{token_id}_{secret}", digest(secret))


def parse(token: str) -> ParsedToken | None:
    """The parts of a hub token, or None if ``token`` is not one (it may be a JWT)."""
    match = _FORMAT.match(token)
    if match is None:
        return None
    return ParsedToken(_KIND[match.group(1)], match.group(2), match.group(3))


def matches(parsed: ParsedToken, stored_digest: str) -> bool:
    """Whether the secret is the one whose digest was stored (constant time)."""
    return hmac.compare_digest(digest(parsed.secret), stored_digest)


def redact(text: str) -> str:
    """``text`` with every hub token's secret replaced, for anything that may reach a log."""
    return _ANYWHERE.sub(lambda m: f"{m.group(1)}_{m.group(2)}_<redacted>", text)


_ANYWHERE = re.compile(r"(ef[uj])_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
