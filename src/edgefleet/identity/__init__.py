"""Identity: principals and roles, bearer tokens, site credentials. No I/O."""

from edgefleet.identity.principal import TENANT_BOUND, Principal, Role, Via

__all__ = ["TENANT_BOUND", "Principal", "Role", "Via"]
