"""Signed, expiring image URLs of the fake server."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from pipeline.fake_server.urls import ImageSpec, UrlSigner, Verdict, decode_token

SPEC = ImageSpec(seed=12345, width=82, height=46, variant=1)


def _parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    token = split.path.rsplit("/", 1)[1].removesuffix(".png")
    query = parse_qs(split.query)
    return token, query["exp"][0], query["sig"][0]


def test_url_has_ideograms_shape_and_round_trips() -> None:
    """A URL is /api/images/ephemeral/{22 chars}.png?exp&sig and decodes to its image."""
    signer = UrlSigner(b"k" * 32)
    url = signer.url("http://h:1", SPEC, 2000, b"nonce!!")
    assert url.startswith("http://h:1/api/images/ephemeral/")
    token, exp, sig = _parts(url)
    assert len(token) == 22
    assert len(sig) == 64
    assert decode_token(token) == SPEC
    assert signer.check(token, exp, sig, now=1999.0) == (Verdict.OK, SPEC)


def test_url_expires_at_exp() -> None:
    """At or after exp the URL is expired."""
    signer = UrlSigner()
    token, exp, sig = _parts(signer.url("http://h", SPEC, 2000, b"1234567"))
    assert signer.check(token, exp, sig, now=2000.0)[0] is Verdict.EXPIRED


def test_tampering_breaks_the_signature() -> None:
    """A changed sig, exp or token, or another server's secret, fails the check."""
    signer = UrlSigner()
    token, exp, sig = _parts(signer.url("http://h", SPEC, 2000, b"1234567"))
    other = "0" if sig[0] != "0" else "1"
    assert signer.check(token, exp, other + sig[1:], 0)[0] is Verdict.BAD_SIGNATURE
    assert signer.check(token, "9999", sig, 0)[0] is Verdict.BAD_SIGNATURE
    assert signer.check(token, "soon", sig, 0)[0] is Verdict.BAD_SIGNATURE
    forged = ("B" if token[0] == "A" else "A") + token[1:]
    assert signer.check(forged, exp, sig, 0)[0] is Verdict.BAD_SIGNATURE
    assert signer.check(token, exp, "é" * 64, 0)[0] is Verdict.BAD_SIGNATURE
    assert UrlSigner().check(token, exp, sig, 0)[0] is Verdict.BAD_SIGNATURE


def test_foreign_tokens_do_not_decode() -> None:
    """Tokens that are not ours decode to None."""
    assert decode_token("abc") is None
    assert decode_token("!!!!") is None
