"""The broker connection as the channel and `operator-use doctor`'s probe both open it (aiomqtt is imported
only when called: the configuration loads without the extra)."""

from __future__ import annotations

from typing import Any

from .config import MQTTConfig


def client_options(config: MQTTConfig) -> dict[str, Any]:
    """aiomqtt.Client's keyword arguments for the protocol version, TLS and the username/password. The caller
    adds its own client id, session and timeouts: the probe must not take over the agent's session."""
    import aiomqtt

    options: dict[str, Any] = {
        "protocol": aiomqtt.ProtocolVersion.V5 if config.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
    }
    if config.uses_tls:
        options["tls_params"] = aiomqtt.TLSParameters(
            ca_certs=_str(config.tls_ca), certfile=_str(config.tls_cert), keyfile=_str(config.tls_key)
        )
        options["tls_insecure"] = config.tls_insecure
    return options


def _str(value: object) -> str | None:
    return None if value is None else str(value)
