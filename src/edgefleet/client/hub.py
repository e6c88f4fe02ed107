"""A typed, synchronous client of the hub's REST API."""

from __future__ import annotations

from typing import Any

import httpx

from edgefleet.client.config import Context, load_context
from edgefleet.model import (
    App,
    AppDemand,
    Event,
    ReplicaState,
    RoutingTable,
    Site,
    SiteReporting,
)


class HubError(Exception):
    """The hub refused a request, or could not be reached."""

    def __init__(self, status: int, detail: Any, *, url: str = "") -> None:
        self.status = status
        self.detail = detail
        self.url = url
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
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        context = load_context() if hub is None else Context("explicit", hub, token)
        self.hub = context.hub.rstrip("/")
        headers = {"Authorization": f"Bearer {context.token}"} if context.token else {}
        self._http = httpx.Client(
            base_url=self.hub, headers=headers, timeout=timeout, transport=transport
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
            raise HubError(reply.status_code, detail, url=str(reply.url))
        return reply

    # -- objects ---------------------------------------------------------------------------------

    def apply(self, obj: Site | App) -> tuple[Site | App, str]:
        """Create or update; returns the stored object and created, configured or unchanged."""
        body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        if isinstance(obj, Site):
            reply = self._call("PUT", f"/api/v1/sites/{obj.metadata.name}", json=body)
            return Site.model_validate(reply.json()), _outcome(reply)
        path = f"/api/v1/tenants/{obj.metadata.tenant}/apps/{obj.metadata.name}"
        reply = self._call("PUT", path, json=body)
        return App.model_validate(reply.json()), _outcome(reply)

    def list_sites(self) -> list[Site]:
        """Every site."""
        items = self._call("GET", "/api/v1/sites").json()["items"]
        return [Site.model_validate(i) for i in items]

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

    def list_apps(self, tenant: str | None = None) -> list[App]:
        """Apps of every tenant, or of one."""
        params = {"tenant": tenant} if tenant else {}
        items = self._call("GET", "/api/v1/apps", params=params).json()["items"]
        return [App.model_validate(i) for i in items]

    def get_app(self, tenant: str, name: str) -> App:
        """One app."""
        reply = self._call("GET", f"/api/v1/tenants/{tenant}/apps/{name}")
        return App.model_validate(reply.json())

    def delete_app(self, tenant: str, name: str) -> None:
        """Delete an app."""
        self._call("DELETE", f"/api/v1/tenants/{tenant}/apps/{name}")

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
