"""Lists on the wire: the paging metadata of a list answer, and many objects applied at once.

Paging is Kubernetes's: ask for ``limit`` objects, and the answer's ``metadata.continue`` (absent
on the last page) asks for the next ones. Applying many objects takes a ``List`` of manifests,
applied in order in one transaction, and answers what became of each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from edgefleet.model.manifests import KINDS
from edgefleet.model.objects import App, Site, _Base
from edgefleet.model.tenant import Tenant

MAX_PAGE = 5000
"""The most objects one page of a list may hold (``limit``)."""

MAX_APPLY = 1000
"""The most objects one apply request may hold."""

ITEM_HEADER = "X-Edgefleet-Item"
"""Response header of a refused apply of many objects: the index of the object refused."""


class ListMeta(_Base):
    """Where a page of a list stands in the whole list."""

    continue_: str | None = Field(
        default=None,
        alias="continue",
        description="Pass as the ``continue`` query parameter to read the next page; absent on "
        "the last page. Opaque, and good only for the list it came from.",
    )
    remaining_item_count: int | None = Field(
        default=None,
        description="How many objects come after this page, counted when it was read.",
    )


def _by_kind(value: Any, handler: ValidatorFunctionWrapHandler) -> Site | App | Tenant:
    """One manifest, validated as the model its ``kind`` names.

    Errors are located from the manifest's own root (``spec.capacity.cpu``), as the object's
    own PUT locates them, without the union's tag a discriminated union would add."""
    if isinstance(value, Site | App | Tenant):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "model_type", "expected a Site, App or Tenant manifest (an object)"
        )
    kind = value.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        error = PydanticCustomError(
            "kind",
            "unknown kind {kind}: use one of {kinds}",
            {"kind": repr(kind), "kinds": ", ".join(KINDS)},
        )
        raise ValidationError.from_exception_data(
            "Manifest", [InitErrorDetails(type=error, loc=("kind",), input=kind)]
        )
    return model.model_validate(value)


def _at_most(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Refuse more than ``MAX_APPLY`` items before validating any of them."""
    if isinstance(value, list) and len(value) > MAX_APPLY:
        raise PydanticCustomError(
            "too_long",
            "{count} objects in one apply: the most is {most}; split them over several "
            "requests (edgefleet apply -f does)",
            {"count": len(value), "most": MAX_APPLY},
        )
    return handler(value)


Manifest = Annotated[
    Annotated[Site | App | Tenant, Field(discriminator="kind")], WrapValidator(_by_kind)
]
"""A Site, App or Tenant manifest, told apart by its ``kind``."""


class ApplyList(_Base):
    """Objects to create or update, in order, all or none (``POST /api/v1/apply``)."""

    api_version: Literal["edgefleet.io/v1alpha1"] = Field(default="edgefleet.io/v1alpha1")
    kind: Literal["List"] = Field(default="List")
    items: Annotated[list[Manifest], WrapValidator(_at_most)] = Field(
        json_schema_extra={"maxItems": MAX_APPLY},
        description=f"Site, App and Tenant manifests, at most {MAX_APPLY}, applied in order.",
    )


class Applied(_Base):
    """What an apply did to one object."""

    kind: Literal["Site", "App", "Tenant"] = Field(description="The object's kind.")
    tenant: str | None = Field(description="The app's tenant; null for sites and tenants.")
    name: str = Field(description="The object's name.")
    outcome: Literal["created", "configured", "unchanged"] = Field(
        description="created, configured (changed), or unchanged."
    )
    resource_version: str = Field(description="The object's resourceVersion after the apply.")


class AppliedList(_Base):
    """What an apply of many objects did, one entry per object, in the request's order."""

    items: list[Applied] = Field(description="One entry per object applied.")


def apply_summary(applied: Iterable[Applied]) -> list[str]:
    """One line per kind, in the order kinds first appear: 'site: 9990 created, 10 unchanged'."""
    counts: dict[str, Counter[str]] = {}
    for item in applied:
        counts.setdefault(item.kind.lower(), Counter())[item.outcome] += 1
    order = ("created", "configured", "unchanged")
    return [
        f"{kind}: " + ", ".join(f"{seen[o]} {o}" for o in order if seen[o])
        for kind, seen in counts.items()
    ]
