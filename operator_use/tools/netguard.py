"""Which addresses web_fetch may connect to (SSRF protection).

Every address a host name resolves to must be public (`ipaddress.is_global`, with IPv4-mapped and NAT64
IPv6 forms unwrapped) unless `allow_private` is set or the host is in `allow_hosts`. The fetch then
connects to the very address that was checked (the URL is pinned to it, with the original Host header and
TLS server name), so a DNS answer that changes between the check and the connection (rebinding) cannot
redirect it. The check runs again for every redirect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..agent.tools import ToolError
from .config import WebFetchConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(ToolError):
    """The URL points to an address the agent may not reach."""


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (lower case, no brackets)
    port: int
    ips: tuple[str, ...]  # the checked addresses, tried in order

    @property
    def ip(self) -> str:
        return self.ips[0]


def _allowlisted(host: str, port: int, allow_hosts: list[str]) -> bool:
    for entry in allow_hosts:
        entry = entry.strip().lower()
        if entry.startswith("[") and "]" in entry:  # [::1]:8080
            h, _, rest = entry[1:].partition("]")
            p = rest.lstrip(":")
        elif entry.count(":") == 1:
            h, _, p = entry.partition(":")
        else:
            h, p = entry, ""
        if h == host and (not p or p == str(port)):
            return True
    return False


async def check_url(url: str, config: WebFetchConfig) -> Target:
    """Validate scheme and host, resolve, and return the address to connect to; raise BlockedAddress."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ToolError(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {scheme or 'a relative URL'!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ToolError("the URL has no host")
    if parts.username or parts.password:
        raise ToolError("URLs with credentials (user:password@) are not fetched")
    port = port or (443 if scheme == "https" else 80)
    allowed = config.allow_private or _allowlisted(host, port, config.allow_hosts)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ToolError(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from None
        addresses = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ToolError(f"cannot resolve {host}")
    if not allowed:
        blocked = [str(ip) for ip in addresses if not is_public(ip)]
        if blocked:
            # Every address must pass: an attacker's name may return one public and one private address.
            raise BlockedAddress(
                f"{host} resolves to a private, loopback or link-local address ({blocked[0]}); "
                "such addresses are not fetched"
            )
    return Target(scheme, host, port, tuple(str(ip) for ip in addresses))
