"""A typed, synchronous client of the hub's REST API."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import httpx

from edgefleet.client.config import Context, load_context
from edgefleet.model import (
    API_VERSION,
    ITEM_HEADER,
    MAX_APPLY,
    MAX_PAGE,
    App,
    AppDemand,
    Applied,
    AppliedList,
    Event,
    ReplicaState,
    RoutingTable,
    Site,
    SiteReporting,
    Tenant,
)
from edgefleet.model.access import AuditRecord, NewToken, TokenInfo, WhoAmI


class HubError(Exception):
    """The hub refused a request, or could not be reached."""

    def __init__(self, status: int, detail: Any, *, url: str = "", item: int | None = None) -> None:
        self.status = status
        self.detail = detail
        self.url = url
        self.item = item
        """In an apply of many objects: the index of the object refused, when the hub says."""
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One readable paragraph: what, where, why."""
        if self.status == 0:
            return f"cannot reach the hub at {self.url}: {self.detail}"
        if isinstance(self.detail, list):
            lines = []
            for error in self.detail:
                loc = [str(p) for p in error.get("loc", []) if p != "body"]
                lines.append(f"{'.'.join(loc) or '(document)'}: {error.get('msg')}")
            return "; ".join(lines)
        return str(self.detail)


def verify_with(ca: str | Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies the hub with: the fleet's CA when given, else the system's CAs."""
    if ca is None:
        return True
    path = Path(ca).expanduser()
    if not path.is_file():
        raise ValueError(f"CA file {path} does not exist: give the ca.crt of 'edgefleet hub init'")
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ValueError(f"CA file {path} holds no usable certificate: {exc}") from exc


def _refused_item(reply: httpx.Response) -> int | None:
    """Which object of an apply of many the hub refused: its header, or the index in the first
    validation error's location (``["body", "items", 3, ...]``)."""
    header = reply.headers.get(ITEM_HEADER)
    if header is not None and header.isdigit():
        return int(header)
    try:
        detail = reply.json().get("detail")
    except (ValueError, AttributeError):
        return None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc", [])
        if len(loc) > 2 and loc[:2] == ["body", "items"] and isinstance(loc[2], int):
            return loc[2]
    return None


def _outcome(reply: httpx.Response) -> str:
    fallback = "created" if reply.status_code == 201 else "configured"
    return str(reply.headers.get("X-Edgefleet-Outcome", fallback))


class Client:
    """The hub's API as Python methods. Objects in and out are the shared pydantic models."""

    def __init__(
        self,
        hub: str | None = None,
        *,
        token: str | None = None,
        ca: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        context = load_context() if hub is None else Context("explicit", hub, token, ca)
        self.hub = context.hub.rstrip("/")
        headers = {"Authorization": f"Bearer {context.token}"} if context.token else {}
        self._http = httpx.Client(
            base_url=self.hub,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=verify_with(context.ca),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubError(0, str(exc) or type(exc).__name__, url=self.hub) from exc
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text
            raise HubError(reply.status_code, detail, url=str(reply.url), item=_refused_item(reply))
        return reply

    def _pages(
        self, path: str, page_size: int, params: dict[str, Any] | None = None
    ) -> Iterator[list[Any]]:
        """The items of a list, a page of ``page_size`` at a time (0: all in one request)."""
        if page_size < 0 or page_size > MAX_PAGE:
            raise ValueError(f"page_size {page_size}: use 1 to {MAX_PAGE}, or 0 for one request")
        query: dict[str, Any] = dict(params or {})
        if page_size:
            query["limit"] = page_size
        while True:
            data = self._call("GET", path, params=query).json()
            yield data["items"]
            token = (data.get("metadata") or {}).get("continue")
            if not page_size or not token:
                return
            query["continue"] = token

    # -- objects ---------------------------------------------------------------------------------

    @overload
    def apply(self, obj: Site) -> tuple[Site, str]: ...
    @overload
    def apply(self, obj: App) -> tuple[App, str]: ...
    @overload
    def apply(self, obj: Tenant) -> tuple[Tenant, str]: ...

    def apply(self, obj: Site | App | Tenant) -> tuple[Site | App | Tenant, str]:
        """Create or update; returns the stored object and created, configured or unchanged."""
        body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        if isinstance(obj, Site):
            reply = self._call("PUT", f"/api/v1/sites/{obj.metadata.name}", json=body)
            return Site.model_validate(reply.json()), _outcome(reply)
        if isinstance(obj, Tenant):
            reply = self._call("PUT", f"/api/v1/tenants/{obj.metadata.name}", json=body)
            return Tenant.model_validate(reply.json()), _outcome(reply)
        path = f"/api/v1/tenants/{obj.metadata.tenant}/apps/{obj.metadata.name}"
        reply = self._call("PUT", path, json=body)
        return App.model_validate(reply.json()), _outcome(reply)

    def apply_many(self, objs: Sequence[Site | App | Tenant], *, chunk: int = 500) -> list[Applied]:
        """Create or update many objects, in order, ``chunk`` to a request; returns what became
        of each. Each request is applied whole or not at all; a refusal stops at its request
        (those before it stay applied) and its HubError's ``item`` indexes ``objs``."""
        return [applied for batch in self.apply_batches(objs, chunk=chunk) for applied in batch]

    def apply_batches(
        self, objs: Sequence[Site | App | Tenant], *, chunk: int = 500
    ) -> Iterator[list[Applied]]:
        """``apply_many`` one request at a time: yields what became of each chunk's objects as
        soon as the hub answers it."""
        if not 1 <= chunk <= MAX_APPLY:
            raise ValueError(f"chunk {chunk}: use 1 to {MAX_APPLY} objects a request")
        for start in range(0, len(objs), chunk):
            items = []
            for obj in objs[start : start + chunk]:
                body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
                body.pop("status", None)
                items.append(body)
            try:
                reply = self._call(
                    "POST",
                    "/api/v1/apply",
                    json={"apiVersion": API_VERSION, "kind": "List", "items": items},
                )
            except HubError as exc:
                if exc.item is not None:
                    exc.item += start
                raise
            yield AppliedList.model_validate(reply.json()).items

    def site_pages(self, page_size: int = 500) -> Iterator[list[Site]]:
        """Every site, by name, a page of ``page_size`` at a time (0: all in one request)."""
        for items in self._pages("/api/v1/sites", page_size):
            yield [Site.model_validate(i) for i in items]

    def iter_sites(self, page_size: int = 500) -> Iterator[Site]:
        """Every site, by name, read ``page_size`` at a time (0: all in one request)."""
        for page in self.site_pages(page_size):
            yield from page

    def list_sites(self) -> list[Site]:
        """Every site."""
        return list(self.iter_sites())

    def get_site(self, name: str) -> Site:
        """One site."""
        return Site.model_validate(self._call("GET", f"/api/v1/sites/{name}").json())

    def delete_site(self, name: str) -> None:
        """Delete a site."""
        self._call("DELETE", f"/api/v1/sites/{name}")

    def site_replicas(self, name: str) -> dict[str, list[ReplicaState]]:
        """What the site's agent last reported running, per ``tenant/app``."""
        data = self._call("GET", f"/api/v1/sites/{name}/replicas").json()
        return {k: [ReplicaState.model_validate(r) for r in v] for k, v in data.items()}

    def site_reporting(self, name: str) -> SiteReporting:
        """What the hub has taken of the site's demand reports."""
        return SiteReporting.model_validate(
            self._call("GET", f"/api/v1/sites/{name}/reporting").json()
        )

    def app_pages(self, tenant: str | None = None, page_size: int = 500) -> Iterator[list[App]]:
        """Apps of every tenant (or of one), by tenant and name, a page of ``page_size`` at a
        time (0: all in one request)."""
        params = {"tenant": tenant} if tenant else {}
        for items in self._pages("/api/v1/apps", page_size, params):
            yield [App.model_validate(i) for i in items]

    def iter_apps(self, tenant: str | None = None, page_size: int = 500) -> Iterator[App]:
        """Apps of every tenant (or of one), read ``page_size`` at a time."""
        for page in self.app_pages(tenant, page_size):
            yield from page

    def list_apps(self, tenant: str | None = None) -> list[App]:
        """Apps of every tenant, or of one."""
        return list(self.iter_apps(tenant))

    def get_app(self, tenant: str, name: str) -> App:
        """One app."""
        reply = self._call("GET", f"/api/v1/tenants/{tenant}/apps/{name}")
        return App.model_validate(reply.json())

    def delete_app(self, tenant: str, name: str) -> None:
        """Delete an app."""
        self._call("DELETE", f"/api/v1/tenants/{tenant}/apps/{name}")

    def tenant_pages(self, page_size: int = 500) -> Iterator[list[Tenant]]:
        """Every tenant with a policy, by name, a page of ``page_size`` at a time (0: all in
        one request)."""
        for items in self._pages("/api/v1/tenants", page_size):
            yield [Tenant.model_validate(i) for i in items]

    def iter_tenants(self, page_size: int = 500) -> Iterator[Tenant]:
        """Every tenant with a policy, read ``page_size`` at a time."""
        for page in self.tenant_pages(page_size):
            yield from page

    def list_tenants(self) -> list[Tenant]:
        """Every tenant with a policy."""
        return list(self.iter_tenants())

    def get_tenant(self, name: str) -> Tenant:
        """One tenant's policy, with what its apps take now."""
        return Tenant.model_validate(self._call("GET", f"/api/v1/tenants/{name}").json())

    def create_tenant(self, tenant: Tenant) -> Tenant:
        """Create a tenant's policy; HubError 409 if it has one."""
        body = tenant.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        return Tenant.model_validate(self._call("POST", "/api/v1/tenants", json=body).json())

    def delete_tenant(self, name: str) -> None:
        """Delete a tenant's policy (its apps stay)."""
        self._call("DELETE", f"/api/v1/tenants/{name}")

    def app_demand(self, tenant: str, name: str) -> list[AppDemand]:
        """The app's decayed demand per origin site, busiest first."""
        reply = self._call("GET", f"/api/v1/tenants/{tenant}/apps/{name}/demand")
        return [AppDemand.model_validate(d) for d in reply.json()]

    def events(
        self,
        *,
        kind: str | None = None,
        tenant: str | None = None,
        name: str | None = None,
        limit: int = 50,
    ) -> list[Event]:
        """Recent events, oldest first."""
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in (("kind", kind), ("tenant", tenant), ("name", name)) if v})
        return [
            Event.model_validate(e)
            for e in self._call("GET", "/api/v1/events", params=params).json()
        ]

    def logs(self, tenant: str, name: str, *, site: str | None = None, tail: int = 100) -> str:
        """Replica logs of an app, from every site running it or one."""
        params: dict[str, Any] = {"tail": tail}
        if site:
            params["site"] = site
        return self._call("GET", f"/api/v1/tenants/{tenant}/apps/{name}/logs", params=params).text

    def explain_dns(
        self, name: str, *, site: str | None = None, client_ip: str | None = None
    ) -> dict[str, Any]:
        """What the fleet's DNS answers for ``name`` at a site or for a client, and why."""
        params = {k: v for k, v in (("name", name), ("site", site), ("client_ip", client_ip)) if v}
        result: dict[str, Any] = self._call("GET", "/api/v1/dns/explain", params=params).json()
        return result

    def routing_table(self) -> RoutingTable:
        """The routing table the fleet's DNS answers from."""
        return RoutingTable.model_validate(self._call("GET", "/api/v1/routing-table").json())

    def version(self) -> str:
        """The hub's version."""
        version: str = self._call("GET", "/api/v1/version").json()["version"]
        return version

    # -- identity --------------------------------------------------------------------------------

    def whoami(self) -> WhoAmI:
        """Who the hub takes this client's token for."""
        return WhoAmI.model_validate(self._call("GET", "/api/v1/whoami").json())

    def create_token(
        self, name: str, role: str, *, tenants: list[str] | None = None, ttl: float | None = None
    ) -> NewToken:
        """Make a token (its secret is in the answer only); ``ttl`` None: never expires."""
        body = {"name": name, "role": role, "tenants": tenants or [], "ttl": ttl}
        return NewToken.model_validate(self._call("POST", "/api/v1/tokens", json=body).json())

    def list_tokens(self, *, kind: str | None = None, site: str | None = None) -> list[TokenInfo]:
        """Every token, join token and site credential (no secrets)."""
        params = {k: v for k, v in (("kind", kind), ("site", site)) if v}
        reply = self._call("GET", "/api/v1/tokens", params=params)
        return [TokenInfo.model_validate(t) for t in reply.json()]

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token or site credential, from the next request on."""
        self._call("DELETE", f"/api/v1/tokens/{token_id}")

    def join_token(self, site: str, *, ttl: float = 3600.0) -> NewToken:
        """A one-time join token for ``site``'s agent."""
        reply = self._call("POST", f"/api/v1/sites/{site}/join-tokens", json={"ttl": ttl})
        return NewToken.model_validate(reply.json())

    def join_tokens(self, sites: list[str], *, ttl: float = 3600.0) -> list[NewToken]:
        """One-time join tokens for many sites at once, in the order asked."""
        reply = self._call("POST", "/api/v1/join-tokens", json={"sites": sites, "ttl": ttl})
        return [NewToken.model_validate(t) for t in reply.json()["items"]]

    def audit(
        self,
        *,
        subject: str | None = None,
        tenant: str | None = None,
        action: str | None = None,
        failed: bool | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The newest audit entries matching every filter, oldest first."""
        params: dict[str, Any] = {"limit": limit}
        for key, value in (
            ("subject", subject),
            ("tenant", tenant),
            ("action", action),
            ("failed", failed),
            ("since", since),
        ):
            if value is not None:
                params[key] = value
        reply = self._call("GET", "/api/v1/audit", params=params)
        return [AuditRecord.model_validate(e) for e in reply.json()]
