"""Test clusters: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) with kwok's fake nodes, on loopback, from the binaries ``make kube`` builds.

Without the binaries every test that needs a cluster is skipped, with what to run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgefleet.testbed.kube import KubeBinaries, KubeCluster, find_binaries, guard_cluster_range


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    """The built control plane; skips the test when there is none."""
    found = find_binaries()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def kube_cluster(
    kube_binaries: KubeBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """One running cluster with three Ready nodes, shared by the tests of a module."""
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"), "edgefleet-test", kube_binaries)
    with cluster.running():
        yield cluster


@pytest.fixture(scope="session")
def cluster_range_guarded() -> Iterator[bool]:
    """Whether traffic to the clusters' pod addresses is kept on this machine (needs root);
    tests that make an agent proxy a request to a pod skip without it."""
    with guard_cluster_range() as guarded:
        yield guarded
