"""Reading manifests: every problem located by file, document, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.model.manifests import ManifestError, load_paths, load_text

GOOD_APP = """\
apiVersion: edgefleet.io/v1alpha1
kind: App
metadata: {name: hello, tenant: demo}
spec:
  workload: {type: process, command: edgefleet-hello}
"""


def test_several_documents_and_json() -> None:
    text = GOOD_APP + "---\n" + GOOD_APP.replace("hello", "bye") + "---\n"
    assert [m.obj.metadata.name for m in load_text(text, "a.yaml")] == ["hello", "bye"]
    json_text = (
        '{"apiVersion": "edgefleet.io/v1alpha1", "kind": "App", '
        '"metadata": {"name": "j", "tenant": "t"}, '
        '"spec": {"workload": {"type": "process", "command": "x"}}}'
    )
    assert load_text(json_text, "a.json")[0].obj.metadata.name == "j"


def test_problems_name_file_document_line_and_field() -> None:
    bad = GOOD_APP + "  placement:\n    replicas: -2\n"
    text = GOOD_APP + "---\n" + bad
    with pytest.raises(ManifestError) as caught:
        load_text(text, "apps.yaml")
    [problem] = caught.value.problems
    assert (problem.source, problem.document, problem.field) == (
        "apps.yaml",
        2,
        "spec.placement.replicas",
    )
    assert problem.line == 13
    assert "greater than or equal to 0" in problem.reason
    assert str(problem).startswith("apps.yaml, document 2 (line 13): spec.placement.replicas:")


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("- a\n- b\n", "(document)", "expected a mapping"),
        ("apiVersion: v1\nkind: App\n", "apiVersion", "must be 'edgefleet.io/v1alpha1'"),
        ("apiVersion: edgefleet.io/v1alpha1\nkind: Pod\n", "kind", "unknown kind 'Pod'"),
        ("a: [1,\n", "(document)", "not valid YAML"),
    ],
)
def test_document_level_problems(text: str, field: str, reason: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(text, "x.yaml")
    assert caught.value.problems[0].field == field
    assert reason in caught.value.problems[0].reason


def test_paths_directories_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD_APP)
    (tmp_path / "notes.txt").write_text("ignored")
    assert len(load_paths([str(tmp_path)])) == 1
    (tmp_path / "b.yml").write_text(GOOD_APP)
    with pytest.raises(ManifestError, match="also defined in"):
        load_paths([str(tmp_path)])
    with pytest.raises(ManifestError, match="no such file"):
        load_paths([str(tmp_path / "missing.yaml")])
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ManifestError, match="no documents"):
        load_paths([str(tmp_path / "empty.yaml")])


def test_bundled_samples_are_valid() -> None:
    root = Path(__file__).parents[3] / "src" / "edgefleet" / "samples" / "manifests"
    kinds = [m.obj.kind for m in load_paths([str(root)])]
    assert kinds.count("Site") == 6 and kinds.count("App") == 1
