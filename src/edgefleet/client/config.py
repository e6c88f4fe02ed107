"""CLI contexts: which hub to talk to, like a kubeconfig.

``EDGEFLEET_HUB`` / ``EDGEFLEET_TOKEN`` / ``EDGEFLEET_CA`` win; else the current context of
``~/.config/edgefleet/config.yaml`` (``EDGEFLEET_CONFIG`` names another file); else the default
hub on loopback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_HUB = "http://127.0.0.1:7700"


@dataclass(frozen=True)
class Context:
    """Where a hub is and how to authenticate."""

    name: str
    hub: str
    token: str | None = None
    ca: str | None = None
    """CA certificate file that signed the hub's certificate (from ``edgefleet hub init``)."""


def config_path() -> Path:
    """The contexts file."""
    explicit = os.environ.get("EDGEFLEET_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "config.yaml"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'contexts' and 'current-context'")
    return data


def load_context(name: str | None = None) -> Context:
    """The context to use: environment, then the named or current context, then the default."""
    data = _read(config_path())
    contexts = data.get("contexts") or {}
    chosen = name or data.get("current-context")
    if name is not None and name not in contexts:
        raise ValueError(f"{config_path()}: no context named {name!r} (have: {sorted(contexts)})")
    entry = contexts.get(chosen) or {}
    hub = os.environ.get("EDGEFLEET_HUB") or entry.get("hub") or DEFAULT_HUB
    token = os.environ.get("EDGEFLEET_TOKEN") or entry.get("token")
    ca = os.environ.get("EDGEFLEET_CA") or entry.get("ca")
    return Context(name=chosen or "default", hub=hub.rstrip("/"), token=token, ca=ca)


def save_context(context: Context, *, make_current: bool = True) -> Path:
    """Add or replace a context in the contexts file (atomically); returns the file."""
    path = config_path()
    data = _read(path)
    contexts = data.setdefault("contexts", {})
    entry: dict[str, Any] = {"hub": context.hub}
    if context.token:
        entry["token"] = context.token
    if context.ca:
        entry["ca"] = context.ca
    contexts[context.name] = entry
    if make_current:
        data["current-context"] = context.name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
