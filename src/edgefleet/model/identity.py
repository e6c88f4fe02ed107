"""Identity on the wire: the hub's public signing keys, and a site's join.

A site trades a join token for a credential (``POST /api/v1/agent/join``); the credential is a
JWT the hub signs with Ed25519 (``edgefleet.identity.credentials``), and every site checks its
peers' credentials against the public keys the hub publishes in the routing table.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import AwareDatetime, Field, field_validator

from edgefleet.model.objects import _Base

_ED25519_KEY_BYTES = 32


class PublicKey(_Base):
    """A public Ed25519 key of the hub, as the JWK members that name it (RFC 8037).

    A JSON Web Key subset: ``{"kty": "OKP", "crv": "Ed25519", "kid": ..., "x": ...}``, so a
    standard JWT library or a JWKS consumer can use the list as it is.
    """

    kid: str = Field(
        min_length=1,
        max_length=32,
        description="Key id: the start of the key's RFC 7638 thumbprint; credentials name it.",
    )
    x: str = Field(description="The raw 32-byte public key, base64url without padding.")
    kty: Literal["OKP"] = Field(default="OKP", description="Key type (RFC 8037).")
    crv: Literal["Ed25519"] = Field(default="Ed25519", description="Curve (RFC 8037).")

    @field_validator("x")
    @classmethod
    def _raw_key(cls, value: str) -> str:
        if len(raw_public_key(value)) != _ED25519_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key has {_ED25519_KEY_BYTES} bytes")
        return value


def raw_public_key(x: str) -> bytes:
    """The bytes of a JWK ``x`` member (base64url, padding optional); ValueError if it is not."""
    try:
        return base64.b64decode(x + "=" * (-len(x) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


class JoinRequest(_Base):
    """The body of ``POST /api/v1/agent/join``; the join token goes in ``Authorization``."""

    site: str = Field(description="The site joining: must be the site the join token names.")
    attempt: str | None = Field(
        default=None,
        min_length=16,
        max_length=128,
        description="An id the agent picks for this join and keeps while it retries: a retry "
        "whose first answer was lost gets the site's credential again (the lost one is revoked); "
        "a join with another id, or none, finds the token spent.",
    )


class JoinResponse(_Base):
    """The hub's answer to a join: the site's credential and the keys to check peers with."""

    site: str = Field(description="The site the credential is for.")
    credential: str = Field(
        description="The site's credential (a JWT): a bearer token for the hub, and what the "
        "site shows its peers on spilled requests and offloads."
    )
    expires_at: AwareDatetime = Field(description="When the credential stops working.")
    signing_keys: list[PublicKey] = Field(
        default_factory=list,
        description="The hub's public keys, to check peers' credentials until the routing "
        "table brings newer ones.",
    )
