"""Fleet policy objects: a tenant's residency, quota and access, and an app's own policy.

A ``Tenant`` is fleet-scoped, named like the tenant its apps name in ``metadata.tenant``. A tenant
without a Tenant object has no policy: its apps run anywhere, without quota, for every client.
An app narrows its tenant's policy with ``spec.policy``; it never widens it:

- residency: the app runs only in regions both allow (an empty list does not constrain);
- access: a client must pass the tenant's rule and the app's rule.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgefleet.model.objects import AccessRule, Cpu, DnsLabel, Memory, ObjectMeta, _Base


class TenantQuota(_Base):
    """The most a tenant's apps take of the fleet together; an unset limit is no limit."""

    replicas: int | None = Field(default=None, ge=0, description="Most replicas, all apps.")
    cpu: Cpu | None = Field(default=None, description="Most CPU cores ('500m', 8), all apps.")
    memory: Memory | None = Field(
        default=None, description="Most memory ('16Gi', bytes), all apps."
    )

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set."""
        return self.replicas is None and self.cpu is None and self.memory is None


class TenantSpec(_Base):
    """A tenant's policy: where its apps run, how much they take, who may reach them."""

    regions: list[DnsLabel] = Field(
        default_factory=list,
        description="Residency: the tenant's apps run only in these regions (empty: any).",
    )
    quota: TenantQuota = Field(default_factory=TenantQuota, description="Limits, all apps.")
    access: AccessRule = Field(
        default_factory=AccessRule, description="Clients allowed to reach the tenant's apps."
    )


class TenantStatus(_Base):
    """What the tenant's apps take now, as placed (composed when read)."""

    apps: int = Field(default=0, description="Apps of the tenant.")
    replicas: int = Field(default=0, description="Replicas placed, all apps.")
    cpu: float = Field(default=0.0, description="CPU cores of the placed replicas.")
    memory: int = Field(default=0, description="Bytes of memory of the placed replicas.")


class Tenant(_Base):
    """A tenant's fleet policy: residency, quota, access. Deleting it lifts the policy only."""

    api_version: Literal["edgefleet.io/v1alpha1"] = Field(default="edgefleet.io/v1alpha1")
    kind: Literal["Tenant"] = Field(default="Tenant")
    metadata: ObjectMeta
    spec: TenantSpec = Field(default_factory=TenantSpec)
    status: TenantStatus = Field(default_factory=TenantStatus)

    @field_validator("metadata")
    @classmethod
    def _no_tenant(cls, meta: ObjectMeta) -> ObjectMeta:
        if meta.tenant is not None:
            raise ValueError(
                "a Tenant is fleet-scoped and named by metadata.name: remove metadata.tenant"
            )
        return meta
