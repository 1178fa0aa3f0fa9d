"""Strict reference parsers, written from the rules (client_ip.py, design.md) rather than from the code
they check: ``socket.inet_pton`` decides what an address is; everything around it is spelt out here.
"""

from __future__ import annotations

import re
from socket import AF_INET, AF_INET6, inet_pton

__all__ = ["ref_address", "ref_forwarded_entry", "ref_viewer_address"]

# inet_pton's alphabet: anything else (space, NUL, "%" of a zone id, non-ASCII) is not an address.
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_MAPPED = b"\0" * 10 + b"\xff\xff"
_PORT = re.compile(r"[0-9]{1,5}")


def ref_address(text: str) -> bytes | None:
    """4 bytes (IPv4, or IPv4-mapped IPv6 per RFC 4291 2.5.5.2), 16 bytes (IPv6), or ``None``."""
    if not _ADDRESS_CHARS.fullmatch(text):
        return None
    try:
        if ":" in text:
            packed = inet_pton(AF_INET6, text)
            return packed[12:] if packed[:12] == _MAPPED else packed
        return inet_pton(AF_INET, text)
    except OSError:
        return None


def _port(text: str) -> bool:
    return _PORT.fullmatch(text) is not None and int(text) <= 65535


def ref_forwarded_entry(raw: bytes) -> bytes | None:
    """One X-Forwarded-For entry: ``a.b.c.d``, ``v6``, ``a.b.c.d:port`` or ``[v6]:port`` / ``[v6]``,
    with optional spaces and tabs around it (RFC 9110 OWS); anything else is ``None``."""
    text = raw.decode("latin-1").strip(" \t")
    plain = ref_address(text)
    if plain is not None:
        return plain
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text, re.DOTALL)
    if bracketed is not None:
        host, port = bracketed.group(1), bracketed.group(2)
        if ":" not in host or (port is not None and not _port(port)):
            return None
        return ref_address(host)  # [::ffff:a.b.c.d]:p is the IPv4 host, like the plain spelling
    v4_port = re.fullmatch(r"([^:]*):([^:]*)", text, re.DOTALL)
    if v4_port is not None and _port(v4_port.group(2)):
        packed = ref_address(v4_port.group(1))
        return packed if packed is not None and len(packed) == 4 else None
    return None


def ref_viewer_address(raw: bytes) -> bytes | None:
    """CloudFront-Viewer-Address: ``ip:port`` with the address never bracketed (an IPv6 address
    keeps its colons), so the port is after the last colon; the port is required."""
    text = raw.decode("latin-1").strip(" \t")
    host, sep, port = text.rpartition(":")
    return ref_address(host) if sep and _port(port) else None
