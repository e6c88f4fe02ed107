"""The API objects: shapes, defaults, validation, wire names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edgefleet.model import App, PlacementPolicy, Site, parse_cpu, parse_memory
from edgefleet.model.objects import FunctionWorkload, VmWorkload
from tests.factories import make_app, make_site


def test_site_round_trips_in_camel_case() -> None:
    site = make_site("paris", labels={"tier": "metro"})
    wire = site.to_wire()
    assert wire["apiVersion"] == "edgefleet.io/v1alpha1"
    assert wire["kind"] == "Site"
    assert wire["spec"]["capacity"]["maxReplicas"] == 20
    assert wire["spec"]["addresses"]["ingressPort"] == 8080
    assert Site.model_validate(wire) == site


def test_app_defaults() -> None:
    app = make_app()
    assert app.key == "demo/hello"
    assert app.spec.workload.type == "process"
    assert app.spec.workload.health_path == "/healthz"
    assert app.spec.placement.mode.value == "explicit"
    assert app.spec.resources.cpu == pytest.approx(0.1)
    assert app.spec.resources.memory == 32 * 1024**2


def test_container_workload() -> None:
    app = App.model_validate(
        {
            "metadata": {"name": "web", "tenant": "shop"},
            "spec": {"workload": {"type": "container", "image": "nginx:1.27", "port": 80}},
        }
    )
    assert app.spec.workload.type == "container"
    assert app.spec.workload.image == "nginx:1.27"


def test_vm_workload() -> None:
    app = App.model_validate(
        {
            "metadata": {"name": "legacy", "tenant": "shop"},
            "spec": {
                "workload": {
                    "type": "vm",
                    "image": "quay.io/containerdisks/fedora:40",
                    "cloudInit": "#cloud-config\nruncmd: [serve]\n",
                },
                "resources": {"cpu": 2, "memory": "2Gi"},
            },
        }
    )
    workload = app.spec.workload
    assert isinstance(workload, VmWorkload)
    assert (workload.port, workload.health_path) == (8080, "/healthz")
    assert workload.cloud_init == "#cloud-config\nruncmd: [serve]\n"
    wire = app.to_wire()["spec"]["workload"]
    assert wire["cloudInit"].startswith("#cloud-config")
    assert App.model_validate(app.to_wire()) == app
    # At the limit is fine: KubeVirt's own bound, in bytes (é is two).
    assert VmWorkload(image="d", cloud_init="é" * 1024).cloud_init == "é" * 1024
    with pytest.raises(ValidationError, match="2050 bytes"):
        VmWorkload(image="d", cloud_init="é" * 1025)


def test_function_workload() -> None:
    app = App.model_validate(
        {
            "metadata": {"name": "thumbs", "tenant": "shop"},
            "spec": {
                "workload": {
                    "type": "function",
                    "image": "ghcr.io/shop/thumbs:2",
                    "command": ["/thumbs"],
                    "args": ["--fast"],
                    "env": {"MODE": "small"},
                    "healthPath": "/ready",
                }
            },
        }
    )
    workload = app.spec.workload
    assert isinstance(workload, FunctionWorkload)
    assert (workload.command, workload.args, workload.env) == (
        ["/thumbs"],
        ["--fast"],
        {"MODE": "small"},
    )
    assert (workload.port, workload.health_path) == (8080, "/ready")
    assert App.model_validate(app.to_wire()) == app


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"metadata": {"name": "Hello", "tenant": "demo"}}, "not a valid name"),
        ({"metadata": {"name": "hello"}}, "set metadata.tenant"),
        ({"spec": {"workload": {"type": "process", "command": "x"}, "bogus": 1}}, "Extra inputs"),
        ({"spec": {"workload": {"type": "lambda", "command": "x"}}}, "does not match any of the"),
        ({"spec": {"workload": {"type": "vm", "command": "x"}}}, r"workload\.vm\.image\n"),
        ({"spec": {"workload": {"type": "function"}}}, r"workload\.function\.image\n"),
        ({"spec": {"workload": {"type": "function", "image": "a b"}}}, "must not contain spaces"),
        (
            {"spec": {"workload": {"type": "vm", "image": "disk:1", "cloudInit": "x" * 2049}}},
            "cloudInit is 2049 bytes; KubeVirt takes at most 2048",
        ),
        ({"spec": {"workload": {"type": "vm", "image": "disk:1", "port": 0}}}, "port"),
        (
            {
                "spec": {
                    "workload": {"type": "process", "command": "x"},
                    "placement": {"replicas": 1, "replicasPerSite": 1},
                }
            },
            "either replicas or replicasPerSite",
        ),
        (
            {
                "spec": {
                    "workload": {"type": "process", "command": "x"},
                    "placement": {"weights": {"a": 1}, "spread": {"by": "zone"}},
                }
            },
            "set only one",
        ),
        (
            {
                "spec": {
                    "workload": {"type": "process", "command": "x"},
                    "scaling": {"minReplicas": 3, "maxReplicas": 1},
                }
            },
            "must not exceed",
        ),
        (
            {
                "spec": {
                    "workload": {"type": "process", "command": "x"},
                    "resources": {"cpu": "lots"},
                }
            },
            "not a quantity",
        ),
    ],
)
def test_invalid_apps_are_refused(patch: dict[str, object], message: str) -> None:
    data = make_app().model_dump(mode="json", by_alias=True)
    data.update(patch)
    with pytest.raises(ValidationError, match=message):
        App.model_validate(data)


def test_site_validation() -> None:
    data = make_site("paris").model_dump(mode="json", by_alias=True)
    data["spec"]["location"]["lat"] = 91
    with pytest.raises(ValidationError, match="less than or equal to 90"):
        Site.model_validate(data)
    data = make_site("paris").model_dump(mode="json", by_alias=True)
    data["spec"]["addresses"]["ip"] = "not-an-ip"
    with pytest.raises(ValidationError, match="does not appear to be an IPv4 or IPv6"):
        Site.model_validate(data)
    data = make_site("paris").model_dump(mode="json", by_alias=True)
    data["metadata"]["tenant"] = "demo"
    with pytest.raises(ValidationError, match=r"remove metadata\.tenant"):
        Site.model_validate(data)


def test_placement_defaults_to_one_replica() -> None:
    assert PlacementPolicy().replicas == 1
    assert PlacementPolicy(replicas_per_site=2).replicas is None


@pytest.mark.parametrize(
    ("raw", "cores"), [(2, 2.0), (0.5, 0.5), ("500m", 0.5), ("1.5", 1.5), ("250m", 0.25)]
)
def test_cpu_quantities(raw: object, cores: float) -> None:
    assert parse_cpu(raw) == pytest.approx(cores)


@pytest.mark.parametrize(
    ("raw", "size"),
    [(1024, 1024), ("64Mi", 64 * 1024**2), ("2Gi", 2 * 1024**3), ("1G", 10**9), ("1.5Ki", 1536)],
)
def test_memory_quantities(raw: object, size: int) -> None:
    assert parse_memory(raw) == size


@pytest.mark.parametrize("raw", ["-1", "1X", True, None, "m"])
def test_bad_quantities(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_memory(raw)
    with pytest.raises(ValueError):
        parse_cpu(raw)


@given(st.integers(min_value=0, max_value=10**6))
def test_millicores_are_thousandths(millis: int) -> None:
    assert parse_cpu(f"{millis}m") == pytest.approx(millis / 1000)
