"""The configuration as every command loads it: a bad file or variable is one clear line and exit status 2;
and the workspace as `init` and `onboard` both set it up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..config import Config


def load_or_exit() -> Config:
    from ..config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def ensure_workspace_or_exit(config: Config) -> None:
    """The workspace's starter files added where missing (the owner's own kept), said on stdout; a template
    missing from the installed package is one line and exit status 1."""
    from ..workspace import TemplateMissing, ensure_workspace

    try:
        created = ensure_workspace(config.workspace)
    except TemplateMissing as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Workspace {config.workspace}: {len(created)} file(s) added"
        if created
        else f"Workspace {config.workspace} is complete"
    )
