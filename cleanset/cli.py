"""The `cleanset` console script: the command line assembled in flows/cli.py (in the wheel,
cleanset/flows/cli.py; see hatch_build.py)."""

from flows.cli import app, main

__all__ = ["app", "main"]
