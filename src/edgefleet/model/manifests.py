"""Reading manifests: YAML or JSON files with one or more documents, validated before anything
is sent, so a bad document in a file stores nothing at all.

PyYAML is imported when a manifest is read: the agent, which reads none, goes without it."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgefleet.model.objects import API_VERSION, WORKLOAD_TYPES, App, Site
from edgefleet.model.tenant import Tenant

if TYPE_CHECKING:
    import yaml

KINDS: dict[str, type[Site] | type[App] | type[Tenant]] = {
    "Site": Site,
    "App": App,
    "Tenant": Tenant,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located precisely."""

    source: str
    """File name, or ``<stdin>``."""
    document: int
    """1-based index of the document in the file."""
    line: int | None
    """Line of the document's start in the file, if known."""
    field: str
    """Dotted path of the field (``spec.placement.replicas``), or ``(document)``."""
    reason: str
    """What is wrong and, where possible, what to do."""
    loc: tuple[int | str, ...] = ()
    """The field's path as pydantic gives it, for finding its line."""

    def __str__(self) -> str:
        where = f"{self.source}, document {self.document}"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.field}: {self.reason}"


class ManifestError(Exception):
    """One or more problems; nothing was applied."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Manifest:
    """A valid object and where it came from."""

    source: str
    document: int
    obj: Site | App | Tenant


def field_path(loc: Iterable[int | str]) -> str:
    """``('spec', 'placement', 'replicas')`` -> ``spec.placement.replicas``; list items as [i]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in WORKLOAD_TYPES and out.endswith("workload"):
            continue  # the union tag adds nothing a person needs to see
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def parse_object(data: Any, *, source: str, document: int, line: int | None) -> Site | App | Tenant:
    """Validate one decoded document as an edgefleet object."""

    def problem(field: str, reason: str) -> ManifestError:
        return ManifestError([Problem(source, document, line, field, reason)])

    if not isinstance(data, dict):
        raise problem("(document)", "expected a mapping with apiVersion, kind, metadata, spec")
    if data.get("apiVersion") != API_VERSION:
        raise problem("apiVersion", f"must be {API_VERSION!r}, got {data.get('apiVersion')!r}")
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise problem("kind", f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            [
                Problem(source, document, line, field_path(e["loc"]), e["msg"], tuple(e["loc"]))
                for e in exc.errors()
            ]
        ) from None


def _line_of(node: yaml.Node | None, loc: Iterable[int | str]) -> int | None:
    """The line of the field at ``loc`` inside a composed document, as deep as it exists."""
    import yaml

    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            continue  # a union tag or a missing field: keep the deepest line found
        node, line = child, child.start_mark.line + 1
    return line


def _documents(text: str, source: str) -> list[tuple[int, yaml.Node | None, Any]]:
    """(index, composed node, data) of each non-empty document."""
    import yaml

    found: list[tuple[yaml.Node | None, Any]] = []
    # libyaml's parser when PyYAML has it (seven times faster on a file of 10,000 sites).
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        # One pass: each document is composed (its nodes carry its lines) and then built.
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is not None:
                found.append((node, data))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = text[: mark.index].count("\n---") + 1 if mark is not None else 1
        raise ManifestError(
            [Problem(source, where, line, "(document)", f"not valid YAML: {exc}")]
        ) from None
    finally:
        loader.dispose()
    return [(i, node, data) for i, (node, data) in enumerate(found, start=1)]


def load_text(text: str, source: str) -> list[Manifest]:
    """Every document of one YAML/JSON text, all validated; ManifestError lists every problem."""
    problems: list[Problem] = []
    manifests: list[Manifest] = []
    for index, node, data in _documents(text, source):
        try:
            obj = parse_object(data, source=source, document=index, line=_line_of(node, ()))
            manifests.append(Manifest(source, index, obj))
        except ManifestError as exc:
            problems.extend(
                Problem(p.source, p.document, _line_of(node, p.loc), p.field, p.reason)
                for p in exc.problems
            )
    if problems:
        raise ManifestError(problems)
    return manifests


def load_paths(paths: Sequence[str]) -> list[Manifest]:
    """Manifests from files, directories (their .yaml/.yml/.json files, sorted) or ``-``."""
    problems: list[Problem] = []
    manifests: list[Manifest] = []
    files: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            files.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(raw)
        if path.is_dir():
            members = sorted(
                p for p in path.iterdir() if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
            )
            if not members:
                problems.append(
                    Problem(raw, 0, None, "(file)", "directory has no .yaml/.yml/.json")
                )
            files.extend((str(p), p.read_text()) for p in members)
        elif path.is_file():
            files.append((raw, path.read_text()))
        else:
            problems.append(Problem(raw, 0, None, "(file)", "no such file or directory"))
    for source, text in files:
        try:
            found = load_text(text, source)
        except ManifestError as exc:
            problems.extend(exc.problems)
            continue
        if not found:
            problems.append(Problem(source, 0, None, "(file)", "no documents in file"))
        manifests.extend(found)
    if problems:
        raise ManifestError(problems)
    seen: dict[tuple[str, str | None, str], Manifest] = {}
    for m in manifests:
        key = (m.obj.kind, m.obj.metadata.tenant, m.obj.metadata.name)
        if key in seen:
            first = seen[key]
            problems.append(
                Problem(
                    m.source,
                    m.document,
                    None,
                    "metadata.name",
                    f"{m.obj.kind} {m.obj.metadata.name!r} is also defined in "
                    f"{first.source}, document {first.document}",
                )
            )
        seen[key] = m
    if problems:
        raise ManifestError(problems)
    return manifests
