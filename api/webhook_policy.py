"""Where webhooks may go: URL checks at creation and address checks at send time.

A webhook makes the server send a request to a URL a tenant chose, so without limits it
reaches what only the server can reach: ``localhost``, the API itself, the cloud metadata
service at ``169.254.169.254``, databases on the private network. This module refuses, by
default, every URL whose host is or resolves to a loopback, private, link-local,
multicast, reserved or unspecified address, both when the schedule is created and again
right before each POST, after DNS resolution; the POST then goes to the address that was
checked (:func:`resolve_public`), so a name that re-resolves to ``127.0.0.1`` between the
check and the connection (DNS rebinding) cannot slip through.

Operators keep control: ``WEBHOOK_ALLOWED_HOSTS`` restricts the hosts (``example.com``,
``*.example.com``); a host named exactly on that list, or every host when
``WEBHOOK_ALLOW_PRIVATE`` is on, may be private (an internal receiver).

HTTP-free: plain functions raising :class:`WebhookRefused` with a code and message.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["WEBHOOK_SCHEMES", "WebhookRefused", "allow_private", "allowed_hosts", "check_url",
           "host_allowed", "is_public_address", "resolve_public"]

WEBHOOK_SCHEMES = ("http", "https")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class WebhookRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def allowed_hosts(config: Mapping[str, Any]) -> list[str]:
    """``WEBHOOK_ALLOWED_HOSTS`` of ``config`` as a list (empty: any host)."""
    raw = config.get("WEBHOOK_ALLOWED_HOSTS") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return [str(h).strip().lower() for h in raw if str(h).strip()]


def allow_private(config: Mapping[str, Any]) -> bool:
    """``WEBHOOK_ALLOW_PRIVATE`` of ``config``: webhooks may go to private and loopback
    hosts."""
    raw = config.get("WEBHOOK_ALLOW_PRIVATE")
    if isinstance(raw, str):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return bool(raw)


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` is on the operator's list (an empty list allows every host).

    ``example.com`` allows exactly that host; ``*.example.com`` allows its subdomains.
    """
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def _named_exactly(host: str, allowed: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(e.lower().rstrip(".") == host for e in allowed if not e.startswith("*."))


def is_public_address(addr: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved, unspecified
    addresses (IPv4-mapped IPv6 judged as their IPv4)."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    scheme: str
    private_ok: bool


def check_url(url: str, allowed: Sequence[str] = (), allow_private: bool = False, *,
              resolve: bool = True) -> Target:
    """Refuse a webhook URL that is malformed, not http(s), carries credentials or control
    characters, is off the allow-list, or names (or resolves to) a non-public address.

    A name that does not resolve now is accepted: the send-time check decides then.
    """
    if _CONTROL.search(url):
        raise WebhookRefused("bad_webhook_url",
                             "webhook_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise WebhookRefused("bad_webhook_url", "webhook_url is not a valid URL") from None
    # Only http(s): file:, gopher:, ftp: and friends would turn the worker into a tool
    # for reading or poking at things the tenant cannot reach.
    scheme = parts.scheme.lower()
    if scheme not in WEBHOOK_SCHEMES:
        raise WebhookRefused("bad_webhook_url", "webhook_url must be an http:// or https:// URL")
    if not host:
        raise WebhookRefused("bad_webhook_url", "webhook_url has no host")
    if parts.username or parts.password:
        raise WebhookRefused("bad_webhook_url",
                             "webhook_url must not carry credentials; verify the signature "
                             "instead")
    if not host_allowed(host, allowed):
        raise WebhookRefused("webhook_host_not_allowed",
                             f"this server only sends webhooks to: {', '.join(allowed)}")
    private_ok = allow_private or _named_exactly(host, allowed)
    port = port or (443 if scheme == "https" else 80)
    target = Target(url=url, host=host, port=port, scheme=scheme, private_ok=private_ok)
    if private_ok:
        return target
    bare = host.lower().rstrip(".")
    if bare in _LOCAL_NAMES or bare.endswith(".localhost"):
        raise _private(host)
    literal = _literal(host)
    if literal is not None:
        if not is_public_address(literal):
            raise _private(host)
        return target
    if resolve:
        try:
            addrs = _resolve(host, port)
        except OSError:
            return target
        if any(not is_public_address(a) for a in addrs):
            raise _private(host)
    return target


def _private(host: str) -> WebhookRefused:
    return WebhookRefused(
        "webhook_host_not_allowed",
        f"webhook host {host[:100]!r} is a loopback, private, link-local, multicast or "
        "unspecified address; webhooks go to public hosts unless the operator allows it")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def resolve_public(url: str, allowed: Sequence[str] = (),
                   allow_private: bool = False) -> tuple[Target, str]:
    """The send-time check: the URL's checks again, then its host resolved and every
    address judged. Returns the target and the one address to connect to.

    Raises :class:`WebhookRefused` (the host is not allowed, or resolves to a non-public
    address) or ``OSError`` (it does not resolve: try again later).
    """
    target = check_url(url, allowed, allow_private, resolve=False)
    literal = _literal(target.host)
    addrs = [literal] if literal else _resolve(target.host, target.port)
    if not target.private_ok:
        bad = [a for a in addrs if not is_public_address(a)]
        if bad:
            raise WebhookRefused(
                "webhook_host_not_allowed",
                f"webhook host {target.host[:100]!r} resolves to {bad[0]}, which is not a "
                "public address; not sent")
    return target, addrs[0]
