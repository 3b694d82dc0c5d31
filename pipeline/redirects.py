"""Following redirects of image downloads and URL sources, only to where they may go.

A URL from the API (a produced image) or from a manifest (a source image) is
fetched as given, but a redirect is followed by hand, at most
`MAX_REDIRECTS` hops, and only to an http(s) URL whose host — every address
it resolves to — is public: a redirect to loopback, link-local (cloud
metadata at 169.254.169.254), private or unspecified addresses is refused
with `RedirectRefused`. When the provider's own ``base_url`` is such an
address (a fake server on 127.0.0.1, an API gateway on the LAN), redirects to
that same class of address are allowed too, and to no other.

The host names are resolved here and checked before the next request; the
connection then resolves them again (a resolver that answered differently the
second time is not caught here).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum

import aiohttp
from yarl import URL

#: redirect hops followed before giving up
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SCHEMES = frozenset({"http", "https"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressClass(Enum):
    """Where an address leads."""

    PUBLIC = "public"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    PRIVATE = "private"
    UNSPECIFIED = "unspecified"


class RedirectRefused(Exception):
    """A redirect to a URL the policy does not allow (or one hop too many)."""


def address_class(address: Address) -> AddressClass:
    """The class of an address (an IPv4-mapped IPv6 address counts as its IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    # 10/8, 172.16/12, 192.168/16, fc00::/7, and every other range that is not public
    # (shared 100.64/10, reserved, multicast, site-local)
    if not address.is_global or address.is_multicast or address.is_reserved:
        return AddressClass.PRIVATE
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return AddressClass.PRIVATE
    return AddressClass.PUBLIC


def parse_address(host: str) -> Address | None:
    """``host`` as an IP address, or None when it is a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class RedirectPolicy:
    """Which redirects to follow: public hosts, plus the class of the provider's own host."""

    #: the class of address the provider's base URL is on (PUBLIC: only public redirects)
    home: AddressClass = AddressClass.PUBLIC
    max_hops: int = MAX_REDIRECTS

    @classmethod
    def for_base_url(cls, base_url: str) -> RedirectPolicy:
        """The policy for a provider at ``base_url`` (``localhost`` counts as loopback)."""
        host = (URL(base_url).host or "").lower()
        address = parse_address(host)
        if address is not None:
            return cls(address_class(address))
        if host == "localhost" or host.endswith(".localhost"):
            return cls(AddressClass.LOOPBACK)
        return cls()

    def allows(self, address: Address) -> bool:
        """Whether a redirect may lead to ``address``."""
        kind = address_class(address)
        return kind is AddressClass.PUBLIC or kind is self.home

    async def check(self, url: URL) -> None:
        """Raise `RedirectRefused` unless a redirect may lead to ``url`` (resolving its host)."""
        if url.scheme not in _SCHEMES:
            scheme = url.scheme or "schemeless"
            raise RedirectRefused(f"redirect to a {scheme} URL refused (only http and https)")
        host = url.host
        if not host:
            raise RedirectRefused(f"redirect to {url} refused: no host")
        literal = parse_address(host)
        addresses = [literal] if literal is not None else await _resolve(host, url.port or 443)
        for address in addresses:
            if not self.allows(address):
                kind = address_class(address).value
                shown = host if literal is not None else f"{host} ({address})"
                raise RedirectRefused(f"redirect to {shown} refused: a {kind} address")


async def _resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (socket.gaierror, an OSError, when none)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [parse_address(str(info[4][0])) for info in infos]
    return [address for address in addresses if address is not None]


@asynccontextmanager
async def get_following(
    session: aiohttp.ClientSession,
    url: str,
    policy: RedirectPolicy,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET ``url``, following the redirects ``policy`` allows; yields the final response.

    A redirect without a ``Location`` is the final response. `RedirectRefused`
    when a hop leads where the policy forbids, or after `max_hops` hops.
    """
    target: str | URL = url
    for hop in range(policy.max_hops + 1):
        async with session.get(target, headers=headers, allow_redirects=False) as response:
            location = response.headers.get("Location") if response.status in REDIRECT_STATUSES else None
            if location is None:
                yield response
                return
            if hop == policy.max_hops:
                raise RedirectRefused(f"more than {policy.max_hops} redirects")
            try:
                target = response.url.join(URL(location))
            except ValueError as exc:
                raise RedirectRefused(f"redirect to an invalid URL {location!r}") from exc
        await policy.check(target)
