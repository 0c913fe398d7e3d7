"""The configuration as every command loads it: a bad file or variable is one clear line and exit status 2."""

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
