"""``python -m edgefleet``."""

from edgefleet.cli.main import main

main()
