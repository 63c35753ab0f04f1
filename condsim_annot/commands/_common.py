"""Helpers the command modules share: the command line as typed (provenance) and number formatting."""

from __future__ import annotations

import shlex

import click


def command_line() -> str:
    """The command as typed (options at non-default values; the store URL left out: it may hold a password)."""
    ctx = click.get_current_context()
    parts = ["condsim-annot"] + ctx.command_path.split()[1:]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            parts += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v]) if x is not None]
        elif v is not None and v != p.default and v is not False:
            flag = max(p.opts, key=len)
            parts += [flag] if v is True else [flag, str(v)]
    return " ".join(shlex.quote(x) for x in parts)


def fmt(x, nd=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)
