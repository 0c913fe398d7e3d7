"""The `control` section: the local socket `operator-use status` asks."""

from __future__ import annotations

from ..config_model import StrictModel


class ControlConfig(StrictModel):
    # A Unix socket in the data home, mode 0600: only this user can ask. Off: `status` says "not running".
    enabled: bool = True
