"""Where redirects may lead: address classes and the policy, on literal addresses (no traffic)."""

from __future__ import annotations

import ipaddress

import pytest
from yarl import URL

from pipeline.redirects import AddressClass, RedirectPolicy, RedirectRefused, address_class

PUBLIC = RedirectPolicy.for_base_url("https://api.ideogram.ai")
LOOPBACK = RedirectPolicy.for_base_url("http://127.0.0.1:8765")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("::ffff:169.254.169.254", AddressClass.LINK_LOCAL),
        ("10.0.0.1", AddressClass.PRIVATE),
        ("172.16.4.2", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fc00::1", AddressClass.PRIVATE),
        ("100.64.0.1", AddressClass.PRIVATE),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.9.9.9", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("93.184.216.34", AddressClass.PUBLIC),
        ("2606:4700::1111", AddressClass.PUBLIC),
    ],
)
def test_address_classes(address: str, kind: AddressClass) -> None:
    """Metadata, private, loopback and unspecified addresses are told from public ones."""
    assert address_class(ipaddress.ip_address(address)) is kind


def test_the_policy_follows_the_providers_own_address_class() -> None:
    """A public provider allows only public hosts; a loopback one adds loopback, never metadata or LAN."""
    assert PUBLIC.home is AddressClass.PUBLIC
    assert LOOPBACK.home is AddressClass.LOOPBACK
    assert RedirectPolicy.for_base_url("http://localhost:9").home is AddressClass.LOOPBACK
    assert RedirectPolicy.for_base_url("http://[::1]:9").home is AddressClass.LOOPBACK
    assert RedirectPolicy.for_base_url("http://10.1.2.3").home is AddressClass.PRIVATE
    for policy in (PUBLIC, LOOPBACK):
        assert policy.allows(ipaddress.ip_address("93.184.216.34"))
        for refused in ("169.254.169.254", "10.0.0.1", "fe80::1", "fc00::1", "0.0.0.0"):
            assert not policy.allows(ipaddress.ip_address(refused)), (policy, refused)
    assert not PUBLIC.allows(ipaddress.ip_address("::1"))
    assert not PUBLIC.allows(ipaddress.ip_address("127.0.0.1"))
    assert LOOPBACK.allows(ipaddress.ip_address("::1"))
    assert LOOPBACK.allows(ipaddress.ip_address("127.0.0.2"))


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.0.0.1/x.png", "10.0.0.1"),
        ("http://[::1]:8080/x.png", "::1"),
        ("https://127.0.0.1/x.png", "127.0.0.1"),
        ("http://localhost:1/x.png", "localhost"),
        ("file:///etc/passwd", "file"),
        ("ftp://93.184.216.34/x.png", "ftp"),
    ],
)
async def test_check_refuses_and_names_the_host(url: str, named: str) -> None:
    """A redirect to a forbidden host or scheme is refused with a message naming it (nothing connects)."""
    with pytest.raises(RedirectRefused, match="refused") as caught:
        await PUBLIC.check(URL(url))
    assert named in str(caught.value)


async def test_check_passes_public_and_home_addresses() -> None:
    """Literal public addresses pass any policy; loopback passes the loopback provider's."""
    await PUBLIC.check(URL("https://93.184.216.34/image.png"))
    await LOOPBACK.check(URL("http://127.0.0.1:1/image.png"))
    with pytest.raises(RedirectRefused, match=r"169\.254\.169\.254"):
        await LOOPBACK.check(URL("http://169.254.169.254/"))
