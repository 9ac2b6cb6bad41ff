"""Bounded network access for identity material (thin async adapter; no parsing, no validation).

* :func:`fetch_document` GETs one HTTPS document (a SPIFFE bundle from an ``https_web`` endpoint, an
  OIDC discovery document, a JWKS): ``https`` only, server authenticated by the web PKI (``ca_file``
  or the system roots, hostname checked), a total time budget, a size cap enforced while reading
  (``Content-Length`` first, then the bytes actually received), status 200 only. Redirects are
  followed only within the same origin (scheme, host and port), at most :data:`MAX_REDIRECTS` hops;
  a redirect anywhere else is refused (a bundle endpoint cannot hand its agents to another host).
* :func:`probe_tls` connects to a workload's TLS endpoint and returns the DER certificate chain it
  presents (leaf first), bounded in count and size. Verification is **off at the TLS layer** on
  purpose: the chain is an X.509-SVID validated afterwards under the SPIFFE bundle
  (:func:`cctf.identity.x509svid.verify_x509_svid`), not under the web PKI. Nothing is sent but
  the handshake; the connection is closed at once.

Every failure raises :class:`FetchError` whose ``reason`` (:class:`FetchReason`) is a reason code
fit for an observation's ``detail``; ``timed_out`` says whether it counts as a timeout. Messages name
the URL or endpoint and the cause in one line, never a response body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from enum import StrEnum
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx2

from cctf.errors import CctfError
from cctf.ids import shown

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_CHAIN_BYTES",
    "MAX_PROBE_CERTS",
    "MAX_REDIRECTS",
    "FetchError",
    "FetchReason",
    "fetch_document",
    "probe_tls",
    "web_context",
]

DEFAULT_TIMEOUT_S: Final = 5.0
MAX_REDIRECTS: Final = 3
#: certificates a probed endpoint may present (more is an error, not a truncation)
MAX_PROBE_CERTS: Final = 16
#: total DER bytes of a presented chain
MAX_CHAIN_BYTES: Final = 128 * 1024


class FetchReason(StrEnum):
    """Why a fetch or probe failed (the ``detail`` reason code of a timeout/error observation)."""

    TIMEOUT = "timeout"
    CONNECT_FAILED = "connect_failed"  # refused, unreachable, reset, DNS failure
    TLS_FAILED = "tls_failed"  # handshake failed, server certificate not trusted
    HTTP_STATUS = "http_status"  # a status other than 200
    REDIRECT_REFUSED = "redirect_refused"  # to another origin, or too many
    TOO_LARGE = "too_large"  # body (or chain) over the cap
    NO_CHAIN = "no_chain"  # the endpoint presented no certificate
    BAD_URL = "bad_url"  # not an https URL with a host
    CA_FILE = "ca_file"  # the configured CA file cannot be loaded


class FetchError(CctfError):
    """A fetch or probe failed; ``reason`` is a :class:`FetchReason`."""

    def __init__(self, reason: FetchReason, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {' '.join(message.split())}")

    @property
    def timed_out(self) -> bool:
        return self.reason is FetchReason.TIMEOUT


def web_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: ``ca_file``'s roots, or the system's; TLS 1.2 or later."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(
            FetchReason.CA_FILE, f"cannot load CA file {shown(ca_file)}: {exc}"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError(FetchReason.BAD_URL, f"{shown(url)} is not an https URL with a host")
    try:
        port = parts.port or 443
    except ValueError:
        raise FetchError(FetchReason.BAD_URL, f"{shown(url)} has an invalid port") from None
    return parts.scheme, parts.hostname.lower(), port


async def fetch_document(
    url: str,
    *,
    max_bytes: int,
    ca_file: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    context: ssl.SSLContext | None = None,
) -> bytes:
    """GET ``url`` and return its body (module docstring); raises :class:`FetchError`.

    ``timeout_s`` bounds the whole call (connects, redirects, reading); ``context`` (a verifying
    client context) overrides ``ca_file``."""
    origin = _origin(url)
    ctx = web_context(ca_file) if context is None else context
    try:
        async with asyncio.timeout(timeout_s):
            async with httpx2.AsyncClient(
                verify=ctx, trust_env=False, follow_redirects=False, timeout=timeout_s
            ) as client:
                return await _get(client, url, origin, max_bytes)
    except TimeoutError:
        raise FetchError(FetchReason.TIMEOUT, f"{shown(url)}: no answer in {timeout_s} s") from None
    except httpx2.TimeoutException:
        raise FetchError(FetchReason.TIMEOUT, f"{shown(url)}: timed out") from None
    except httpx2.ConnectError as exc:
        reason = FetchReason.TLS_FAILED if _is_tls(exc) else FetchReason.CONNECT_FAILED
        raise FetchError(reason, f"{shown(url)}: {_why(exc)}") from None
    except httpx2.HTTPError as exc:  # protocol errors, resets while reading
        raise FetchError(FetchReason.CONNECT_FAILED, f"{shown(url)}: {_why(exc)}") from None
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise FetchError(FetchReason.TLS_FAILED, f"{shown(url)}: {_why(exc)}") from None
    except OSError as exc:
        raise FetchError(FetchReason.CONNECT_FAILED, f"{shown(url)}: {_why(exc)}") from None
    except (httpx2.InvalidURL, ValueError) as exc:  # a URL httpx cannot use (after our checks)
        raise FetchError(FetchReason.BAD_URL, f"{shown(url)}: {_why(exc)}") from None


async def _get(
    client: httpx2.AsyncClient, url: str, origin: tuple[str, str, int], max_bytes: int
) -> bytes:
    for _hop in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code in (301, 302, 303, 307, 308):
                location = response.headers.get("location", "")
                target = urljoin(url, location)
                if not location or _origin_or_none(target) != origin:
                    raise FetchError(
                        FetchReason.REDIRECT_REFUSED,
                        f"{shown(url)} redirects to another origin {shown(target)}",
                    )
                url = target
                continue
            if response.status_code != 200:
                raise FetchError(
                    FetchReason.HTTP_STATUS, f"{shown(url)} answered HTTP {response.status_code}"
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(
                    FetchReason.TOO_LARGE, f"{shown(url)}: {declared} bytes, over {max_bytes}"
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(FetchReason.TOO_LARGE, f"{shown(url)}: over {max_bytes} bytes")
            return bytes(body)
    raise FetchError(
        FetchReason.REDIRECT_REFUSED, f"{shown(url)}: more than {MAX_REDIRECTS} redirects"
    )


def _origin_or_none(url: str) -> tuple[str, str, int] | None:
    try:
        return _origin(url)
    except FetchError:
        return None


def _is_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError | ssl.CertificateError):
            return True
        cur = cur.__cause__ or cur.__context__
    text = str(exc).lower()
    return "certificate" in text or "ssl" in text or "tls" in text


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


async def probe_tls(
    host: str,
    port: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    server_name: str | None = None,
) -> list[bytes]:
    """The DER certificates the TLS endpoint ``host:port`` presents, leaf first (module docstring).

    SNI is ``server_name`` (default ``host`` when it is a name; none for an IP address). Raises
    :class:`FetchError` (``timeout``, ``connect_failed``, ``tls_failed``, ``no_chain``,
    ``too_large``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the chain is validated under the SPIFFE bundle afterwards
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    where = f"{host}:{port}"
    sni = server_name if server_name is not None else (None if _is_ip(host) else host)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=sni or ""
            )
            return _chain_of(writer, where)
    except TimeoutError:
        raise FetchError(FetchReason.TIMEOUT, f"{where}: no handshake in {timeout_s} s") from None
    except ssl.SSLError as exc:
        raise FetchError(FetchReason.TLS_FAILED, f"{where}: {_why(exc)}") from None
    except OSError as exc:
        raise FetchError(FetchReason.CONNECT_FAILED, f"{where}: {_why(exc)}") from None
    finally:
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (TimeoutError, OSError, ssl.SSLError):
                pass


def _chain_of(writer: asyncio.StreamWriter, where: str) -> list[bytes]:
    sslobj = writer.get_extra_info("ssl_object")
    inner = getattr(sslobj, "_sslobj", None)
    get_chain = getattr(inner, "get_unverified_chain", None)
    if get_chain is None:  # not CPython's ssl module (3.10+): fall back to the leaf alone
        leaf = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        chain_der = [leaf] if leaf else []
    else:
        chain = get_chain() or []
        if len(chain) > MAX_PROBE_CERTS:
            raise FetchError(FetchReason.TOO_LARGE, f"{where} presented {len(chain)} certificates")
        chain_der = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    if not chain_der:
        raise FetchError(FetchReason.NO_CHAIN, f"{where} presented no certificate")
    if sum(len(d) for d in chain_der) > MAX_CHAIN_BYTES:
        raise FetchError(FetchReason.TOO_LARGE, f"{where} presented over {MAX_CHAIN_BYTES} bytes")
    return chain_der


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
