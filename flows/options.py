"""Shared pieces of the command line's options."""

from __future__ import annotations


def split_commas(values: list[str] | None) -> list[str] | None:
    """A repeatable option's values with comma-separated ones split: `--text title,body` and
    `--text title --text body` both give ["title", "body"] (spaces around names are dropped)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
