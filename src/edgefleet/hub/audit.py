"""The audit log: every change asked of the hub, by whom, when, and what came of it.

An ASGI middleware around the API: for each POST, PUT, PATCH and DELETE it records the caller
(as the guard authenticated it, or '-' when authentication failed), the source address, the
route, the tenant, the status and the outcome (the apply outcome header, or the refusal's detail).
An apply of many objects is one entry, whose result sums up what became of them (``AuditNote``).
Agents' telemetry (status, heartbeats, demand) is not a change and is not recorded.

A change that writes commits its entry in its own transaction (``edgefleet.hub.store.audit``):
the middleware leaves the entry pending for the route's write to carry, as the route will
answer when the write goes through (the route's status, 201 for an apply that created, the
outcome of an apply of one object). After the answer it amends the entry if the answer turned
out otherwise, and writes it itself when no transaction carried it (refusals, changes that wrote
nothing): those entries are written after the answer, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.hub.auth import PRINCIPAL
from edgefleet.hub.store import Outcome, utcnow
from edgefleet.hub.store.audit import PENDING, AuditEntry, PendingAudit
from edgefleet.identity import Principal

if TYPE_CHECKING:
    from edgefleet.hub.runtime import Hub

log = logging.getLogger(__name__)

NOTE = "edgefleet.audit"
"""Key of an ``AuditNote`` a route may leave in the ASGI scope for its entry."""

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TELEMETRY = ("/status", "/heartbeat", "/demand")
_VERBS = {"POST": "create", "PUT": "apply", "PATCH": "change", "DELETE": "delete"}
_NOUNS = {
    "apps": "app",
    "sites": "site",
    "tenants": "tenant",
    "tokens": "token",
    "join-tokens": "join token",
    "join": "site credential",
}
_ACTIONS = {("POST", "/api/v1/apply"): "apply objects"}
_MAX_BODY = 4096


@dataclass(frozen=True)
class AuditNote:
    """What a route tells the audit log of a change it made, beyond what its route says (an
    apply of many objects: what became of them, and their tenant)."""

    result: str
    """The entry's result when the change succeeded."""
    tenant: str = ""
    """The tenant the change was in ('' for fleet objects, or objects of several tenants)."""


def action_of(method: str, template: str) -> str:
    """What a change does, from its route: 'apply app', 'revoke token', 'create join token'."""
    if (method, template) in _ACTIONS:
        return _ACTIONS[(method, template)]
    parts = [p for p in template.split("/") if p and not p.startswith("{")]
    noun = _NOUNS.get(parts[-1] if parts else "", parts[-1] if parts else "?")
    if noun == "token" and method == "DELETE":
        return "revoke token"
    if noun == "site credential":
        return "join site"
    return f"{_VERBS.get(method, method.lower())} {noun}"


def tenant_of(template: str, params: dict[str, Any]) -> str:
    """The tenant a change is in ('' for fleet objects)."""
    if "tenant" in params:
        return str(params["tenant"])
    if template.startswith("/api/v1/tenants/{name}"):
        return str(params.get("name", ""))
    return ""


def _result(status: int, outcome: str | None, body: bytes) -> str:
    if status < 400:
        if outcome:
            return outcome
        return "deleted" if status == 204 else "ok"
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # validation errors: where and why
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail
        )
    return str(detail or f"HTTP {status}")[:1000]


class AuditLog:
    """ASGI middleware that records changes (see the module docstring)."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES:
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/api/v1/agent/sites/") and scope["path"].endswith(TELEMETRY):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": 500, "outcome": None, "body": b""}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-edgefleet-outcome":
                        seen["outcome"] = value.decode("latin-1")
            elif (
                message["type"] == "http.response.body"
                and seen["status"] >= 400
                and len(seen["body"]) < _MAX_BODY
            ):
                seen["body"] += message.get("body", b"")[:_MAX_BODY]
            await send(message)

        pending = PendingAudit(entry=lambda p: _expected(scope, p))
        token = PENDING.set(pending)
        try:
            await self.app(scope, receive, watch)
        finally:
            PENDING.reset(token)
            pending.closed = True
            await self._record(pending, _entry(scope, seen))

    async def _record(self, pending: PendingAudit, entry: AuditEntry) -> None:
        written = pending.written
        try:
            if written is None:
                await asyncio.to_thread(self.hub.accounts.add_audit, entry)
            elif (written.status, written.result, written.tenant) != (
                entry.status,
                entry.result,
                entry.tenant,
            ):
                await asyncio.to_thread(
                    self.hub.accounts.amend_audit, replace(entry, id=written.id)
                )
        except Exception:
            # The change is done; losing its record is bad, failing the answer is worse.
            log.exception("could not write the audit entry of %s %s", entry.method, entry.path)


def _expected(scope: Scope, pending: PendingAudit) -> AuditEntry:
    """The entry of a change as the route will answer once its write commits: the route's own
    status (an apply's PUT answers 201 when it created) and, for an apply of one object, its
    outcome (the routes send it in ``X-Edgefleet-Outcome``)."""
    route = scope.get("route")
    status = int(getattr(route, "status_code", None) or 200)
    outcome = pending.outcome if scope["method"] == "PUT" else None
    if outcome == Outcome.CREATED:
        status = 201
    return _entry(scope, {"status": status, "outcome": outcome, "body": b""})


def _entry(scope: Scope, seen: dict[str, Any]) -> AuditEntry:
    """The entry of a change, from its scope and what its answer was (``seen``)."""
    principal: Principal | None = scope.get(PRINCIPAL)
    route = scope.get("route")
    template = str(getattr(route, "path", None) or scope["path"])
    params = scope.get("path_params", {})
    client = scope.get("client")
    note: AuditNote | None = scope.get(NOTE)
    status = int(seen["status"])
    return AuditEntry(
        time=utcnow(),
        subject=principal.subject if principal else "-",
        role=principal.role.value if principal else "-",
        source=client[0] if client else "unknown",
        method=scope["method"],
        path=scope["path"],
        action=action_of(scope["method"], template),
        tenant=note.tenant if note is not None else tenant_of(template, params),
        status=status,
        result=(
            note.result
            if note is not None and status < 400
            else _result(status, seen["outcome"], seen["body"])
        ),
    )
