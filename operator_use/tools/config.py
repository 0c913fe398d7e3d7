"""Settings of the built-in tools (`tools:` in config.yaml). Pure pydantic, no tool code imported."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config_model import StrictModel


class ShellConfig(StrictModel):
    # "auto": run commands under bubblewrap when `bwrap` is installed and works; "bwrap": refuse to run
    # without it; "off": no isolation (the command can touch anything the agent's user can, though without
    # capabilities: a root agent's command cannot read the agent's own /proc entries).
    isolation: Literal["auto", "bwrap", "off"] = "auto"
    # Network inside the bubblewrap sandbox (without isolation the command always has the network).
    network: bool = False
    # Extra host paths the sandboxed command may write besides the workspace.
    writable: list[str] = Field(default_factory=list)


class WebFetchConfig(StrictModel):
    # Loopback, private, link-local and other non-public addresses are refused unless this is true.
    allow_private: bool = False
    # Reachable even when they resolve to a non-public address: "host" (any port) or "host:port".
    allow_hosts: list[str] = Field(default_factory=list)
    max_bytes: int = Field(2_000_000, ge=1024)
    # Seconds for the whole fetch, redirects included.
    timeout: float = Field(20.0, gt=0, le=600)
    max_redirects: int = Field(5, ge=0, le=20)
    # Characters of extracted text returned to the model.
    max_chars: int = Field(20_000, ge=500)
    user_agent: str = "Mozilla/5.0 (compatible; operator-use/0.1)"
    # An extra CA certificate file (PEM) to trust, for a self-hosted HTTPS service.
    ca_file: str | None = None


class WebSearchConfig(StrictModel):
    provider: Literal["duckduckgo", "searxng"] = "duckduckgo"
    # Overrides the provider's address (a self-hosted SearXNG, or a fake in tests).
    base_url: str | None = None
    max_results: int = Field(5, ge=1, le=25)
    timeout: float = Field(15.0, gt=0, le=120)

    @model_validator(mode="after")
    def _searxng_needs_an_address(self) -> WebSearchConfig:
        if self.provider == "searxng" and not self.base_url:
            raise ValueError("tools.web_search.base_url is required with provider searxng (your instance's address)")
        return self


class ProcessesConfig(StrictModel):
    # Bytes of recent output kept per background process.
    buffer_bytes: int = Field(64 * 1024, ge=1024)
    max_per_session: int = Field(5, ge=1)


class ToolsConfig(StrictModel):
    shell: ShellConfig = Field(default_factory=ShellConfig)
    web_fetch: WebFetchConfig = Field(default_factory=WebFetchConfig)
    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig)
    processes: ProcessesConfig = Field(default_factory=ProcessesConfig)
    # Seconds ask_user waits for the answer.
    ask_timeout: float = Field(600.0, gt=0, le=86_400)
    # Largest file send_file posts.
    send_file_max_bytes: int = Field(20 * 1024 * 1024, ge=1)
