"""The Tenant kind and an app's own policy: parsing, quantities, errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefleet.model import App, Tenant
from edgefleet.model.manifests import ManifestError, load_text
from tests.factories import make_app

TENANT = """
apiVersion: edgefleet.io/v1alpha1
kind: Tenant
metadata:
  name: acme
spec:
  regions: [eu-west, eu-north]
  quota: {replicas: 20, cpu: 500m, memory: 16Gi}
  access:
    networks: [10.0.0.0/8, 2001:db8::/32]
    regions: [eu-west]
"""


def test_a_tenant_manifest_parses_with_quantities() -> None:
    (manifest,) = load_text(TENANT, "tenant.yaml")
    tenant = manifest.obj
    assert isinstance(tenant, Tenant)
    assert tenant.metadata.name == "acme" and tenant.metadata.tenant is None
    assert tenant.spec.regions == ["eu-west", "eu-north"]
    assert tenant.spec.quota.replicas == 20
    assert tenant.spec.quota.cpu == 0.5
    assert tenant.spec.quota.memory == 16 * 1024**3
    assert tenant.spec.access.networks == ["10.0.0.0/8", "2001:db8::/32"]
    assert not tenant.spec.access.open and not tenant.spec.quota.unlimited


def test_an_empty_tenant_has_no_policy() -> None:
    tenant = Tenant.model_validate({"metadata": {"name": "open"}})
    assert tenant.spec.regions == [] and tenant.spec.access.open and tenant.spec.quota.unlimited


def test_a_bad_network_is_named_by_its_field_path_and_line() -> None:
    text = TENANT.replace("[10.0.0.0/8, 2001:db8::/32]", "[10.0.0.0/8, 10.0.0.0/33]")
    with pytest.raises(ManifestError) as caught:
        load_text(text, "tenant.yaml")
    (problem,) = caught.value.problems
    assert problem.field == "spec.access.networks[1]"
    assert "'10.0.0.0/33' is not a network" in problem.reason
    assert problem.line == 10
    assert str(problem).startswith("tenant.yaml, document 1 (line 10): spec.access.networks[1]")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"regions": ["EU West"]}, "spec.regions[0]"),
        ({"quota": {"cpu": "lots"}}, "spec.quota.cpu"),
        ({"quota": {"memory": "16 gigs"}}, "spec.quota.memory"),
        ({"quota": {"replicas": -1}}, "spec.quota.replicas"),
        ({"access": {"regions": ["-x"]}}, "spec.access.regions[0]"),
        ({"access": {"networks": ["10.0.0.1/8"]}}, "spec.access.networks[0]"),  # host bits
        ({"quotas": {}}, "spec.quotas"),
    ],
)
def test_invalid_fields_are_named(spec: dict[str, object], field: str) -> None:
    doc = {"apiVersion": "edgefleet.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a"}}
    with pytest.raises(ManifestError) as caught:
        load_text(str({**doc, "spec": spec}).replace("'", '"'), "t.json")
    assert [p.field for p in caught.value.problems] == [field]


def test_a_tenant_is_fleet_scoped() -> None:
    with pytest.raises(ValidationError, match="fleet-scoped"):
        Tenant.model_validate({"metadata": {"name": "acme", "tenant": "acme"}})


def test_mixed_files_hold_tenants_sites_and_apps() -> None:
    app = make_app("shop", tenant="acme").model_dump(mode="json", by_alias=True)
    text = TENANT + "---\n" + str(app).replace("'", '"').replace("None", "null")
    kinds = [m.obj.kind for m in load_text(text, "all.yaml")]
    assert kinds == ["Tenant", "App"]


def test_an_app_policy_parses_and_an_unset_one_stays_out_of_the_spec() -> None:
    plain = make_app()
    assert "policy" not in plain.spec.model_dump(mode="json", by_alias=True)
    body = plain.model_dump(mode="json", by_alias=True)
    body["spec"]["policy"] = {"regions": ["eu-west"], "access": {"networks": ["192.0.2.0/24"]}}
    app = App.model_validate(body)
    assert app.spec.policy is not None
    assert app.spec.policy.regions == ["eu-west"]
    assert app.spec.policy.access.networks == ["192.0.2.0/24"]
    assert app.spec.model_dump(mode="json", by_alias=True)["policy"]["regions"] == ["eu-west"]
