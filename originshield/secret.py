"""The CloudFront secret origin header: verification, rotation, and keeping it out of logs and apps.

CloudFront adds a custom origin header (AWS CloudFront Developer Guide, "Restricting access to
Application Load Balancers" / "Adding custom headers to origin requests") that only your
distribution knows, because the CloudFront address pool is shared by every AWS customer: anyone can
point a distribution at your origin, and only the secret ties a request to *yours*.

- Several values are accepted at once, so a secret rotates without downtime: add the new value,
  update the distribution, wait for it to deploy, remove the old value.
- Values come from the environment (:meth:`SecretHeader.from_env`) or a file
  (:meth:`SecretHeader.from_file`), never from code: a secret in a repository is not a secret.
- Comparison is :func:`hmac.compare_digest` on bytes, against every accepted value without early
  exit, so the time taken does not reveal how much of a guess was right nor which value matched.
  (``compare_digest`` may reveal the *length* of the accepted values; use long random values.)
- Two copies of the header are refused by the middleware (which one would the app see?); the
  header is removed from the scope before the app runs, and the value is never logged nor shown in
  ``repr``.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .errors import ConfigError

__all__ = ["MIN_SECRET_LENGTH", "SecretHeader"]

#: Shortest accepted value: a guessable secret is no secret (CloudFront allows up to 1783 bytes).
MIN_SECRET_LENGTH: Final = 16

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 field-name token, lower case
# Visible ASCII without comma (commas separate values in the environment variable) or whitespace
# (HTTP strips leading/trailing whitespace, so such a value could never match).
_VALUE = re.compile(rb"[\x21-\x2b\x2d-\x7e]+")
# Headers a secret must never be carried in: the trust model reads these itself.
_RESERVED: Final = frozenset({"host", "x-forwarded-for", "forwarded", "cloudfront-viewer-address", "cookie"})


@dataclass(frozen=True, slots=True)
class SecretHeader:
    """A header name and the values accepted for it (one or more, for rotation).

    ``name`` is case-insensitive and stored in lower case; ``header`` is its ASGI byte form.
    """

    name: str
    values: tuple[bytes, ...] = field(repr=False)
    header: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name.strip().lower() if isinstance(self.name, str) else ""
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"secret header name: {self.name!r} is not an HTTP field name")
        if name in _RESERVED:
            raise ConfigError(f"secret header name: {name!r} is reserved; use e.g. 'x-origin-verify'")
        values = self.values
        if isinstance(values, (str, bytes)):
            raise ConfigError("secret values: expected a list of values, got a single string")
        out: list[bytes] = []
        for i, value in enumerate(values):
            raw = value.encode("utf-8") if isinstance(value, str) else value
            if not isinstance(raw, bytes) or not _VALUE.fullmatch(raw):
                # Do not echo the value: it is (meant to be) a secret.
                raise ConfigError(
                    f"secret values[{i}]: must be visible ASCII without spaces or commas ({len(raw)} bytes given)"
                )
            if len(raw) < MIN_SECRET_LENGTH:
                raise ConfigError(f"secret values[{i}]: {len(raw)} characters; use at least {MIN_SECRET_LENGTH}")
            if raw not in out:
                out.append(raw)
        if not out:
            raise ConfigError(f"secret header {name!r}: no accepted values")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "values", tuple(out))
        object.__setattr__(self, "header", name.encode("ascii"))

    @classmethod
    def from_env(
        cls,
        name: str = "x-origin-verify",
        variable: str = "ORIGINSHIELD_SECRET",
        environ: Mapping[str, str] | None = None,
    ) -> SecretHeader:
        """Values from an environment variable, comma-separated (``new,old`` during a rotation)."""
        env = os.environ if environ is None else environ
        raw = env.get(variable)
        if raw is None or not raw.strip():
            raise ConfigError(f"secret: environment variable {variable} is not set or empty")
        return cls(name, tuple(v.strip().encode("utf-8") for v in raw.split(",") if v.strip()))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], name: str = "x-origin-verify") -> SecretHeader:
        """Values from a file (e.g. a mounted Kubernetes/Docker secret): one per line; blank lines and
        lines starting with ``#`` are ignored."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"secret: cannot read {os.fspath(path)!r}: {exc.__class__.__name__}") from None
        lines = (line.strip() for line in text.splitlines())
        return cls(name, tuple(v.encode("utf-8") for v in lines if v and not v.startswith("#")))

    @classmethod
    def of(cls, name: str, values: Iterable[str | bytes]) -> SecretHeader:
        """From values already loaded by configuration code (never literals in code)."""
        return cls(name, tuple(v.encode("utf-8") if isinstance(v, str) else v for v in values))

    def verify(self, value: bytes) -> bool:
        """Whether ``value`` equals one of the accepted values (constant time per value, no early exit)."""
        ok = False
        for accepted in self.values:
            ok |= hmac.compare_digest(value, accepted)
        return ok

    def __repr__(self) -> str:
        return f"SecretHeader(name={self.name!r}, values=<{len(self.values)} redacted>)"
