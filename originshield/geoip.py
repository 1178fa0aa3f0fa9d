"""Country lookups over a MaxMind DB (``.mmdb``) file, reloaded without downtime.

:class:`CountryDatabase` implements the middleware's :class:`~originshield.policy.CountryResolver`
(``country(packed) -> "US" | None``) and the refresher's :class:`~originshield.files.Reloadable`
(``name``, ``check()``). It reads GeoLite2-Country, GeoIP2-Country and the City databases (and any
database whose records follow the GeoIP2 schema) through ``maxminddb.open_database(path,
MODE_AUTO)``: the C extension (libmaxminddb over ``mmap``) when it is installed.

**Which code counts.** The country is ``country.iso_code``: where MaxMind places the address.
``registered_country.iso_code`` (where the ISP registered the block, e.g. the home country of a
mobile operator or an anycast network) is used only when ``country`` is absent *and* the caller
asked for it with ``registered_country_fallback=True``; ``represented_country`` (military bases,
embassies) is never used. A record without a usable code, an address not in the database, an IPv6
address on an IPv4-only database and a corrupt record all mean "unknown" (``None``); what the
request gets then is the policy's ``unknown_country`` setting (default: reject when an allow list
is set). A lookup never raises: an error on the request path would turn a bad database into an
outage, and an unknown country already fails closed where it matters.

**Cost.** The lookup itself walks the tree in C, but maxminddb decodes the *whole* record into
dicts (a Country record carries names in eight languages): about 7-12 µs per found address,
against 0.3 µs for a miss. Three things keep that off most requests: the middleware asks only
after the cheap range checks passed, it caches decisions, and this class remembers the answer per
address block (/16 or /24 for IPv4, /32 or /48 for IPv6) whenever the network maxminddb reports for
a lookup covers the whole block, so that the next viewer from the same block costs two dict probes
(about 0.2 µs) instead of a decode. The block cache belongs to one reader (a reload starts empty)
and is emptied when it reaches 65,536 entries. The input is the packed address the middleware
already has, turned into text with ``inet_ntop``: measured on the reader's C extension, text is
the cheapest input (a miss costs 0.36 µs from a ``str``, 0.9 µs from ``inet_ntop`` + ``str``,
1.5 µs from ``ipaddress.IPv4Address(packed)``) and it needs no ``ipaddress`` import on the hot path.

**Reload** (design.md, data flow). The refresher calls :meth:`check` every ``watch_interval``; it
compares the file's (mtime_ns, size, inode, device) with the version in service
(:class:`~originshield.files.FileWatcher`), opens and verifies the new file off the request
path, and swaps it in by one reference assignment. The old reader is *not* closed at the swap:
closing a reader while a lookup runs makes that lookup raise (pure-Python reader: its ``mmap`` is
closed under it). It is retired, and closed on a later ``check()`` once ``close_grace`` seconds
have passed *and* no lookup holds it (its CPython reference count is back to the retired list's
own). A file that fails to open or verify at startup raises :class:`GeoIPDatabaseError` (a
:class:`~originshield.errors.ConfigError` naming the file and the reason); on reload the same
error is raised out of ``check()`` (the refresher logs and counts it), the old reader keeps
serving, and that version of the file is not retried until it changes again.

Replace the file atomically (write a temporary file, then ``rename`` over the old one), as
MaxMind's ``geoipupdate`` does: the reader maps the file, and rewriting a mapped file in place
changes the bytes under running lookups (libmaxminddb may even fault on a truncated mapping).
``mode=maxminddb.MODE_MEMORY`` reads the whole file into memory instead, at the cost of the slower
pure-Python reader.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_ntop
from typing import Any, Final, NoReturn

import maxminddb

from .errors import ConfigError, GeoIPDatabaseError
from .files import FileSignature, FileWatcher

__all__ = ["DEFAULT_VERIFY_NETWORKS", "CountryDatabase", "GeoIPDatabaseError", "GeoIPStatus"]

logger = logging.getLogger("originshield.geoip")

#: How many networks (and their records) are decoded when a file is opened, before it may serve.
#: MaxMind's own corrupt test files all fail within their first few networks (a truncated file
#: already fails to open: its metadata sits at the end). Measured with Country-sized records: about
#: 20-50 µs per network, so 2,000 networks take 0.04-0.1 s of the refresher thread. ``None`` decodes
#: every network (seconds for a Country database, minutes for a City one).
DEFAULT_VERIFY_NETWORKS: Final = 2_000

#: Database types that carry ``country``: GeoIP2/GeoLite2 Country, City and Enterprise, DB-IP's
#: country/city "lite" files. An ASN, ISP or anonymous-IP database opened by mistake would answer
#: "unknown" for everyone: with a deny list, that silently lets every country in.
_COUNTRY_TYPES: Final = re.compile(r"country|city|enterprise", re.IGNORECASE)
_ISO_CODE: Final = re.compile(r"[A-Z]{2}")

#: Entries of a reader's block cache before it is emptied (a few MB at most). A plain dict emptied
#: when full, not an LRU: a cachetools.LRUCache (its public get / item assignment) measured +3,872
#: instructions per request more on the benchmark's GeoIP row (+30,413 vs +26,541 added, callgrind,
#: direct calls, distinct viewers; issue 12), because every probe and insert runs Python code.
_MAX_BLOCKS: Final = 65_536
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class GeoIPStatus:
    """What ``originshield status`` and operators see of the database in service."""

    name: str
    path: str
    #: ``metadata.database_type``, e.g. ``GeoLite2-Country``.
    database_type: str
    #: ``metadata.build_epoch``: when MaxMind built the file (Unix time).
    build_epoch: int
    ip_version: int
    #: 1 for the file opened at startup, +1 for every successful reload.
    generation: int
    #: Unix time at which the reader in service was swapped in.
    loaded_at: float
    reloads: int
    reload_failures: int
    #: Lookups that raised inside maxminddb (corrupt record, closed reader) and counted as unknown.
    lookup_errors: int
    last_error: str | None
    #: Old readers swapped out but not closed yet (a lookup may still hold them).
    retired: int
    registered_country_fallback: bool


class _Reader:
    """One opened file: the reader plus what the hot path needs, read through one attribute."""

    __slots__ = (
        "blocks",
        "build_epoch",
        "database_type",
        "generation",
        "get_with_prefix_len",
        "ip_version",
        "ipv6",
        "loaded_at",
        "reader",
        "retired_at",
    )

    def __init__(self, reader: Any, generation: int) -> None:
        meta = reader.metadata()
        self.reader = reader
        self.get_with_prefix_len: Callable[[str], tuple[object, int]] = reader.get_with_prefix_len
        #: Answers per address block (key: the first 2 or 3 bytes of an IPv4 address, 4 or 6 of an
        #: IPv6 one; the lengths never collide) for blocks that lie inside one network of the file.
        #: It belongs to this reader, so a reload starts empty.
        self.blocks: dict[bytes, str | None] = {}
        self.database_type: str = str(meta.database_type)
        self.build_epoch: int = int(meta.build_epoch)
        self.ip_version: int = int(meta.ip_version)
        self.ipv6 = self.ip_version == 6
        self.generation = generation
        self.loaded_at = time.time()
        #: time.monotonic() of the swap that took it out of service.
        self.retired_at = 0.0


def _refcounts(entries: list[_Reader]) -> list[int]:
    return [sys.getrefcount(entry) for entry in entries]


# References a retired entry has when nothing but the retired list holds it, measured through the
# very code that measures the real ones (list slot, comprehension variable, call argument).
_IDLE_REFS: Final = _refcounts([_Reader.__new__(_Reader)])[0]


def _code(record: object, fallback: bool) -> str | None:
    if record.__class__ is not dict:
        return None
    country = record.get("country")
    code = country.get("iso_code") if country.__class__ is dict else None
    if code is None and fallback:
        registered = record.get("registered_country")
        code = registered.get("iso_code") if registered.__class__ is dict else None
    # ISO 3166-1 alpha-2 only: a database built with lower-case or numeric codes would otherwise
    # never match the (validated, upper-case) policy lists and fail open on a deny list.
    if code.__class__ is str and len(code) == 2 and _ISO_CODE.fullmatch(code):
        return code
    return None


def _fail(path: str, reason: str) -> GeoIPDatabaseError:
    return GeoIPDatabaseError(f"GeoIP database {path}: {reason}")


def _open(path: str, mode: int, fallback: bool, verify_networks: int | None, generation: int) -> _Reader:
    """Open and verify ``path``; raise :class:`GeoIPDatabaseError` naming the file and the reason."""
    try:
        reader = maxminddb.open_database(path, mode)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except maxminddb.InvalidDatabaseError as exc:  # a RuntimeError: bad metadata or search tree
        raise _fail(path, f"not a valid MaxMind DB file ({exc})") from None
    except (OSError, ValueError, TypeError) as exc:  # unreadable, empty (mmap of 0 bytes), bad mode
        raise _fail(path, f"cannot open ({type(exc).__name__}: {exc})") from None
    try:
        entry = _Reader(reader, generation)
        if not _COUNTRY_TYPES.search(entry.database_type):
            raise _fail(
                path,
                f"database type {entry.database_type!r} carries no country data "
                "(expected a GeoIP2/GeoLite2 Country or City database)",
            )
        _verify(path, reader, fallback, verify_networks)
    except BaseException:
        reader.close()
        raise
    if not entry.ipv6:
        logger.warning("GeoIP database %s is IPv4-only: every IPv6 address will count as unknown", path)
    return entry


def _verify(path: str, reader: Any, fallback: bool, limit: int | None) -> None:
    # Decoding the first networks' records catches what opening does not: a corrupt search tree or
    # data section (MaxMind's broken-pointers, broken-search-tree and Broken-Double-Format files
    # open fine and raise on the first lookups), and a schema without ``country.iso_code``.
    if limit is not None and limit <= 0:
        return
    seen = coded = 0
    try:
        for _network, record in reader:
            seen += 1
            if _code(record, fallback) is not None:
                coded += 1
            if limit is not None and seen >= limit:
                break
    except (maxminddb.InvalidDatabaseError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise _fail(path, f"corrupt: decoding network {seen + 1} failed ({exc})") from None
    if seen and not coded:
        field = "country.iso_code" + (" or registered_country.iso_code" if fallback else "")
        raise _fail(path, f"none of the first {seen} records has a two-letter {field} (wrong schema?)")


class CountryDatabase:
    """A hot-reloadable country source over one ``.mmdb`` file.

    >>> geoip = CountryDatabase("/var/lib/GeoIP/GeoLite2-Country.mmdb")
    >>> geoip.country(pack_address("81.2.69.160"))
    'GB'
    >>> refresher.add_watcher(geoip)              # reopened when the file is replaced

    ``registered_country_fallback``: use ``registered_country.iso_code`` when a record has no
    ``country`` (see the module documentation for what that means). ``verify_networks``: how many
    networks are decoded when a file is opened (``None``: all). ``close_grace``: seconds a swapped-out
    reader stays open at least. ``mode``: a ``maxminddb.MODE_*`` constant.

    Raises :class:`GeoIPDatabaseError` (a :class:`~originshield.errors.ConfigError`) if the file
    cannot be opened or verified.
    """

    __slots__ = (
        "_active",
        "_close_grace",
        "_error_lock",
        "_fallback",
        "_last_error",
        "_listeners",
        "_lock",
        "_logged_generation",
        "_lookup_errors",
        "_mode",
        "_reload_failures",
        "_reloads",
        "_retired",
        "_verify_networks",
        "_watcher",
        "name",
        "path",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registered_country_fallback: bool = False,
        name: str | None = None,
        mode: int = maxminddb.MODE_AUTO,
        verify_networks: int | None = DEFAULT_VERIFY_NETWORKS,
        close_grace: float = 1.0,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"geoip path: expected a file path, got {type(path).__name__}")
        self.path = os.fspath(path)
        if not isinstance(registered_country_fallback, bool):
            raise ConfigError("geoip registered_country_fallback: must be true or false")
        if verify_networks is not None and (not isinstance(verify_networks, int) or verify_networks < 0):
            raise ConfigError(f"geoip verify_networks: must be a non-negative integer or None, got {verify_networks!r}")
        if not isinstance(close_grace, (int, float)) or close_grace < 0:
            raise ConfigError(f"geoip close_grace: must be a non-negative number of seconds, got {close_grace!r}")
        self.name = name or f"geoip:{self.path}"
        self._fallback = registered_country_fallback
        self._mode = mode
        self._verify_networks = verify_networks
        self._close_grace = float(close_grace)
        self._lock = threading.Lock()  # one check()/close() at a time; lookups never take it
        self._error_lock = threading.Lock()
        self._retired: list[_Reader] = []
        self._listeners: list[Callable[[CountryDatabase], None]] = []
        self._reloads = self._reload_failures = self._lookup_errors = 0
        self._last_error: str | None = None
        self._logged_generation = 0
        # Signature before opening: if the file is replaced in between, the next check reopens it.
        try:
            self._watcher = FileWatcher(self.path)
        except FileNotFoundError:
            raise _fail(self.path, "file not found") from None
        except OSError as exc:
            raise _fail(self.path, f"cannot stat ({exc.strerror or exc})") from None
        self._active: _Reader = _open(self.path, mode, registered_country_fallback, verify_networks, 1)
        logger.info(
            "GeoIP database %s opened: type=%s build_epoch=%d ip_version=%d",
            self.path,
            self._active.database_type,
            self._active.build_epoch,
            self._active.ip_version,
        )

    # -- the request path ---------------------------------------------------------------------------

    def country(self, packed: bytes) -> str | None:
        """The ISO 3166-1 alpha-2 code of a packed address (4 or 16 bytes), or ``None`` if unknown.

        Never raises for any ``bytes`` input; never blocks (the file is memory-mapped).
        """
        active = self._active  # read once: a concurrent swap cannot change the reader under us
        blocks = active.blocks
        size = len(packed)
        # Block cache first: two dict probes (a /16 then a /24 key for IPv4, /32 then /48 for IPv6)
        # instead of decoding a whole record.
        if size == 4:
            found = blocks.get(packed[:2], _MISSING)
            if found is _MISSING:
                found = blocks.get(packed[:3], _MISSING)
                if found is _MISSING:
                    return self._resolve(active, packed, inet_ntop(AF_INET, packed), 2, 3)
        elif size == 16 and active.ipv6:
            found = blocks.get(packed[:4], _MISSING)
            if found is _MISSING:
                found = blocks.get(packed[:6], _MISSING)
                if found is _MISSING:
                    return self._resolve(active, packed, inet_ntop(AF_INET6, packed), 4, 6)
        else:
            # IPv6 on an IPv4-only database (maxminddb raises ValueError), or not an address.
            return None
        return found  # type: ignore[return-value]

    def _resolve(self, active: _Reader, packed: bytes, text: str, wide: int, narrow: int) -> str | None:
        try:
            record, prefix_len = active.get_with_prefix_len(text)
        except Exception as exc:  # corrupt record (InvalidDatabaseError), reader closed at shutdown
            self._lookup_failed(active, text, exc)
            return None
        code = None if record is None else _code(record, self._fallback)
        # The network the answer belongs to covers the whole /16 (/24) of the address when its
        # prefix is at most that long: every address there gets this answer from this file.
        # (For IPv4 text the reader reports IPv4 prefix lengths, also in an IPv6 database.)
        blocks = active.blocks
        if prefix_len <= 8 * narrow:
            if len(blocks) >= _MAX_BLOCKS:
                blocks.clear()  # bounded; an attacker cycling blocks only costs us the decode
            blocks[packed[:wide] if prefix_len <= 8 * wide else packed[:narrow]] = code
        return code

    def _lookup_failed(self, active: _Reader, text: str, exc: Exception) -> None:
        with self._error_lock:
            self._lookup_errors += 1
            first = self._logged_generation != active.generation
            self._logged_generation = active.generation
        # Once per database version at ERROR: a corrupt record is an operator problem, and every
        # distinct address an attacker tries must not become a log line.
        logger.log(
            logging.ERROR if first else logging.DEBUG,
            "GeoIP lookup of %s in %s failed, country counted as unknown: %s: %s",
            text,
            self.path,
            type(exc).__name__,
            exc,
        )

    # -- reload -------------------------------------------------------------------------------------

    def check(self) -> bool:
        """Reopen the file if it changed; True when a new reader was swapped in.

        Raises :class:`GeoIPDatabaseError` when the file cannot be stat'ed, opened or verified; the
        reader in service stays, and a broken version is not retried until the file changes again.
        Also closes retired readers that are past ``close_grace`` and no longer in use.
        """
        with self._lock:
            self._reap(time.monotonic())
            try:
                sig = self._watcher.changed()
            except OSError as exc:
                self._failed(_fail(self.path, f"cannot stat ({exc.strerror or exc}); keeping the reader in service"))
            if sig is None:
                return False
            return self._reload(sig)

    def reload(self) -> bool:
        """Reopen the file now even if it looks unchanged (operator action); same contract as check."""
        with self._lock:
            try:
                sig = FileSignature.of(self.path)
            except OSError as exc:
                self._failed(_fail(self.path, f"cannot stat ({exc.strerror or exc}); keeping the reader in service"))
            return self._reload(sig)

    def _reload(self, sig: FileSignature) -> bool:
        generation = self._active.generation + 1
        try:
            new = _open(self.path, self._mode, self._fallback, self._verify_networks, generation)
        except GeoIPDatabaseError as exc:
            self._watcher.mark(sig)  # do not reopen (and report) the same broken file every tick
            self._failed(exc)
        self._watcher.mark(sig)
        old, self._active = self._active, new  # the swap: one reference assignment
        old.retired_at = time.monotonic()
        self._retired.append(old)
        self._reloads += 1
        self._last_error = None
        logger.info(
            "GeoIP database %s reloaded: generation=%d type=%s build_epoch=%d (was %d)",
            self.path,
            generation,
            new.database_type,
            new.build_epoch,
            old.build_epoch,
        )
        # After the swap, never before: a listener that drops answers derived from the database
        # (a cache of its own) could otherwise be refilled from the old reader.
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # the new reader is already in service; one listener must not stop others
                logger.exception("GeoIP reload listener %r failed", listener)
        return True

    def subscribe(self, listener: Callable[[CountryDatabase], None]) -> None:
        """Call ``listener(database)`` after every successful reload (in the reloading thread).

        For anything that keeps answers derived from the database: they must not outlive it.
        (:class:`~originshield.middleware.OriginShield` keeps none: it asks the database on every
        decision, so a reload applies at once.)
        """
        with self._lock:
            self._listeners.append(listener)

    def _failed(self, exc: GeoIPDatabaseError) -> NoReturn:
        # Not logged here: the refresher logs and counts what check() raises (no double lines).
        self._reload_failures += 1
        self._last_error = str(exc)
        raise exc

    def _reap(self, now: float) -> None:
        if not self._retired:
            return
        keep: list[_Reader] = []
        for entry, refs in zip(self._retired, _refcounts(self._retired), strict=True):
            # A lookup holds its reader from its one read of ``_active`` to its return; any reference
            # beyond the retired list's own means one may still be running on it.
            if now - entry.retired_at >= self._close_grace and refs <= _IDLE_REFS:
                _close(entry, self.path)
            else:
                keep.append(entry)
        self._retired = keep

    def close(self) -> None:
        """Close every reader (at shutdown). Lookups after this answer ``None`` (unknown)."""
        with self._lock:
            for entry in self._retired:
                _close(entry, self.path)
            self._retired = []
            _close(self._active, self.path)

    def __enter__(self) -> CountryDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- introspection ------------------------------------------------------------------------------

    @property
    def status(self) -> GeoIPStatus:
        active = self._active
        return GeoIPStatus(
            name=self.name,
            path=self.path,
            database_type=active.database_type,
            build_epoch=active.build_epoch,
            ip_version=active.ip_version,
            generation=active.generation,
            loaded_at=active.loaded_at,
            reloads=self._reloads,
            reload_failures=self._reload_failures,
            lookup_errors=self._lookup_errors,
            last_error=self._last_error,
            retired=len(self._retired),
            registered_country_fallback=self._fallback,
        )

    def __repr__(self) -> str:
        active = self._active
        return f"CountryDatabase({self.path!r}, type={active.database_type!r}, generation={active.generation})"


def _close(entry: _Reader, path: str) -> None:
    try:
        entry.reader.close()
    except Exception:  # closing is best effort: a failure must not stop a reload or a shutdown
        logger.warning("closing a GeoIP reader of %s failed", path, exc_info=True)
