"""The CLI's output and error streams: rich consoles, made when first printed to.

rich is loaded by the first print, not when the ``edgefleet`` command starts: the agent
(``edgefleet agent``) writes only log lines, and its memory goes without rich's.
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Stream:
    """stdout or stderr, printed to through a rich ``Console`` made on first use."""

    def __init__(self, *, stderr: bool = False, soft_wrap: bool = False) -> None:
        self.stderr = stderr
        """Print to stderr (else stdout)."""
        self.soft_wrap = soft_wrap
        """Keep long lines whole instead of folding them."""

    @cached_property
    def console(self) -> Console:
        """The rich console behind this stream."""
        from rich.console import Console

        tty = (sys.stderr if self.stderr else sys.stdout).isatty()
        # Piped output keeps whole lines (like kubectl) instead of folding at 80 columns.
        return Console(
            stderr=self.stderr,
            highlight=False,
            soft_wrap=self.soft_wrap,
            width=None if tty else 512,
        )

    def print(self, *objects: Any, **options: Any) -> None:
        """``Console.print``: rich markup and renderables (tables)."""
        self.console.print(*objects, **options)

    def print_json(self, json: str) -> None:
        """``Console.print_json``: JSON text, indented and highlighted."""
        self.console.print_json(json)


out = Stream(soft_wrap=True)
"""Standard output."""
err = Stream(stderr=True)
"""Standard error."""
