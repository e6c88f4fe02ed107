"""The ``--output`` values commands take, apart from ``output`` (which renders them) so that a
command declares the option without loading tables, YAML and the placement arithmetic."""

from __future__ import annotations

from enum import StrEnum


class OutputFormat(StrEnum):
    """``-o`` values."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
