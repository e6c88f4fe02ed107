"""Who a site is: its credential, kept in the state dir, and the keys it checks neighbours with.

A site joins once with a one-time join token (``edgefleet site join-token SITE``) and gets a
credential the hub signs; it shows it to the hub on every call and to neighbours on spilled
requests and offloads. It checks its neighbours' credentials with the hub's public keys and the
revoked ids the routing table brings (or the keys it got at join, before the first table).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from edgefleet.files import write_atomic
from edgefleet.identity.credentials import CredentialClaims, Keyring
from edgefleet.model import PublicKey, RoutingTable

log = logging.getLogger(__name__)

JOIN_PATH = "/api/v1/agent/join"
"""Where an agent trades its join token for the site's credential."""
CREDENTIAL_FILE = "credential.json"
"""The site's credential, in the state dir (mode 0600)."""


class SavedCredential(BaseModel):
    """What ``credential.json`` holds: the site's credential and what came with it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    credential: str = Field(repr=False, description="The site's credential (a JWT): a secret.")
    expires_at: AwareDatetime = Field(description="When the credential stops working.")
    signing_keys: list[PublicKey] = Field(
        default_factory=list,
        description="The hub's public keys at join: peers are checked with them until a "
        "routing table brings its own.",
    )
    join_token_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the join token traded for the credential, to know it "
        "again; the token itself is never kept.",
    )


class JoinRefused(Exception):
    """The hub refused this site's join and the site has no earlier credential: the agent
    cannot talk to the hub, and stops."""


def token_digest(token: str) -> str:
    """SHA-256 of a join token, hex: what the state dir keeps to know the token again."""
    return hashlib.sha256(token.encode()).hexdigest()


def join_needed(saved: SavedCredential | None, join_token: str | None) -> bool:
    """Whether to trade ``join_token`` for a credential: there is one, and the state dir holds
    no credential or one traded for another join token."""
    if not join_token:
        return False
    return saved is None or saved.join_token_sha256 != token_digest(join_token)


def peer_keys(table: Sequence[PublicKey], joined: Sequence[PublicKey]) -> list[PublicKey]:
    """The keys neighbours' credentials are checked with: the newest routing table's, else the
    ones the hub gave at join (before the first table, or from a hub that publishes none)."""
    return list(table or joined)


def problems(exc: ValidationError) -> str:
    """Field paths and messages of a validation error; pydantic's own text quotes the input,
    which may be a secret."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class CredentialFile:
    """``credential.json``: replaced atomically, readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> SavedCredential | None:
        """The saved credential, or None if there is none or it is unreadable."""
        try:
            return SavedCredential.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            log.warning("ignoring unreadable site credential %s: %s", self.path, problems(exc))
            return None
        except OSError as exc:
            log.warning("ignoring unreadable site credential %s: %s", self.path, exc)
            return None

    def save(self, saved: SavedCredential) -> None:
        """Write ``saved`` durably with mode 0600 (``edgefleet.files.write_atomic``)."""
        write_atomic(self.path, saved.model_dump_json(by_alias=True, indent=1).encode(), mode=0o600)


class SiteIdentity:
    """This site's credential and the trust it extends to others."""

    def __init__(self, site: str, state_dir: Path) -> None:
        self.site = site
        self.file = CredentialFile(state_dir / CREDENTIAL_FILE)
        self.saved: SavedCredential | None = None
        """This site's credential, once loaded from the state dir or traded for a join token."""
        self.keyring = Keyring()
        """The keys and revocations neighbours' credentials are checked against."""
        self._table_keys: list[PublicKey] = []
        self._revoked: list[str] = []
        self._warned_no_credential = False

    @property
    def credential(self) -> str | None:
        """This site's credential, shown to the hub and to neighbours; None before joining."""
        return self.saved.credential if self.saved is not None else None

    def load(self) -> SavedCredential | None:
        """Take the credential saved in the state dir, if any."""
        saved = self.file.load()
        if saved is not None:
            self.use(saved)
        return saved

    def use(self, saved: SavedCredential) -> None:
        """Take ``saved`` as this site's credential (and its keys, until a routing table's)."""
        self.saved = saved
        self._trust_changed()
        if saved.expires_at <= datetime.now(UTC):
            log.error(
                "this site's credential expired at %s: make a new join token with "
                "`edgefleet site join-token %s` and restart the agent with it",
                f"{saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
                self.site,
            )

    def take_trust(self, table: RoutingTable) -> None:
        """The routing table's keys and revocations are the fleet's newest word on them."""
        self._table_keys = list(table.signing_keys)
        self._revoked = list(table.revoked_credentials)
        self._trust_changed()

    def _trust_changed(self) -> None:
        joined = self.saved.signing_keys if self.saved is not None else []
        self.keyring.update(peer_keys(self._table_keys, joined), self._revoked)

    def verify(self, token: str) -> CredentialClaims:
        """The claims of a neighbour's or the hub's credential, checked against the fleet's
        keys and revocations; ``CredentialError`` saying why it does not hold."""
        return self.keyring.verify(token, now=datetime.now(UTC))

    def missing(self, refused: str) -> bool:
        """True (and said once) when this site has no credential, so neighbours refuse it."""
        if self.credential is not None:
            return False
        if not self._warned_no_credential:
            self._warned_no_credential = True
            log.warning(
                "site %s has no credential, so neighbours would refuse %s: start the agent "
                "with a join token (EDGEFLEET_JOIN_TOKEN; `edgefleet site join-token %s`)",
                self.site,
                refused,
                self.site,
            )
        return True
