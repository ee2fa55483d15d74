"""Network facts about the connecting client: is it one of the configured trusted relays."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable


def is_trusted(client_ip: str, trusted_relays: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in _networks(tuple(trusted_relays)))


@functools.lru_cache(maxsize=8)
def _networks(trusted_relays: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The configured networks, parsed once rather than for every message."""
    return tuple(ipaddress.ip_network(net, strict=False) for net in trusted_relays)
