"""Continue tokens of paged lists. Pure.

A page of a list ends with a token that asks for the next page (Kubernetes's ``continue``). To a
client it is opaque; inside it is a small JSON, url-safe base64 without padding, naming the list
it belongs to and the key of the page's last object: ``{"list": "sites", "after": ["s0500"]}``.
The next page is read by key from there (keyset paging), so it stays correct when objects are
written or deleted between pages. A token is refused when it does not decode to that shape, or
when it belongs to another list: the key of one list means nothing in another.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

SITES = "sites"
"""Every site, by name."""
TENANTS = "tenants"
"""Every tenant with a policy (that the caller may see), by name."""
ALL_APPS = "apps"
"""Apps of every tenant (that the caller may see), by tenant and name."""

MAX_TOKEN = 1024
"""The longest token accepted (the longest a hub makes is about 200 characters)."""

_LIST = re.compile(rf"{SITES}|{TENANTS}|{ALL_APPS}(/[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?)?")
"""What a list's id looks like (the tenant is a DNS label)."""

_REMEDY = "pass back the metadata.continue of the page before, or leave it out to start again"


class BadContinue(ValueError):
    """A continue token this list cannot take; the message says why and what to do."""


def tenant_apps(tenant: str) -> str:
    """The list of one tenant's apps, by name (``/tenants/{tenant}/apps``, ``/apps?tenant=``)."""
    return f"{ALL_APPS}/{tenant}"


def key_size(list_id: str) -> int:
    """How many values a key of the list has: (tenant, name) for every tenant's apps, else
    the name."""
    return 2 if list_id == ALL_APPS else 1


def described(list_id: str) -> str:
    """The list, in words: 'sites', 'apps of tenant 'demo''."""
    if list_id == ALL_APPS:
        return "apps of every tenant"
    if list_id.startswith(f"{ALL_APPS}/"):
        return f"apps of tenant {list_id.partition('/')[2]!r}"
    return list_id


def encode(list_id: str, after: Sequence[str]) -> str:
    """The token of the page of ``list_id`` that ends with the object keyed ``after``."""
    if len(after) != key_size(list_id):
        raise ValueError(f"a key of {described(list_id)} has {key_size(list_id)} values")
    data = json.dumps({"list": list_id, "after": list(after)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode(token: str, list_id: str) -> tuple[str, ...]:
    """The key the page after ``token`` starts after, for a request to ``list_id``;
    BadContinue if the token is not one of this list."""
    where = f"query parameter 'continue' of the list of {described(list_id)}"
    malformed = BadContinue(f"{where}: not a continue token of this hub: {_REMEDY}")
    if not token or len(token) > MAX_TOKEN:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise malformed from None
    if not isinstance(data, dict) or set(data) != {"list", "after"}:
        raise malformed
    theirs, after = data["list"], data["after"]
    if not isinstance(theirs, str) or not _LIST.fullmatch(theirs):
        raise malformed
    if theirs != list_id:
        raise BadContinue(
            f"{where}: the token belongs to the list of {described(theirs)}: pass each list "
            "only the tokens of its own pages, or leave it out to start again"
        )
    if (
        not isinstance(after, list)
        or len(after) != key_size(list_id)
        or not all(isinstance(part, str) for part in after)
    ):
        raise malformed
    return tuple(after)
