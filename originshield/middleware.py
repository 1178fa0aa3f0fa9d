"""``OriginShield``: the pure ASGI middleware.

Shaped like Starlette's ``TrustedHostMiddleware``: options validated and everything compiled in
``__init__`` (and in the snapshot listener, off the request path); ``__call__`` starts with the
scope-type check; a refused request gets a short fixed response and the app is never called. No
``Request`` object, no ``BaseHTTPMiddleware`` (it costs tens of percent), no body reads.

The request path, top down: :meth:`OriginShield._handle` reads the scope, asks the engine
(:meth:`Engine.decide <originshield.engine.Engine.decide>`, sans-IO) for a verdict, counts it, logs
a refusal through the rate limiter (:mod:`originshield.ratelimit`), and either strips the secret
header and calls the app or sends the fixed refusal. With the C extension, ``__call__`` itself is C
and does the same for http and websocket requests without Python code of ours
(:mod:`originshield._shield`); ``_handle`` stays the reference, the path without the extension,
and serves lifespan and other scope types. There is no decision cache.

Usage::

    app.add_middleware(
        OriginShield,
        secret=SecretHeader.from_env("x-origin-verify", "ORIGIN_SECRET"),
        trusted_proxies=["10.0.0.0/16"],            # topology 2: the ALB subnets
        routes=[Route("/health", Policy.health_check(["10.0.0.0/16"]))],
    )                                                # default policy: Policy.cloudfront()
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._shield import C_CALL, Shield, bound_decider, enable_vectorcall, expose_call
from ._types import ASGIApp, Message, Receive, Scope, Send
from .aws import AwsIpRanges, Network, load_ranges
from .client_ip import TrustedProxies
from .decision import Decision, Outcome
from .engine import DEFAULT_ROUTE, Engine, PolicyReport
from .engine.native import Bind
from .errors import ConfigError
from .inservice import log_startup
from .metrics import Counters
from .policy import CountryResolver, Policy, Route
from .ratelimit import DEFAULT_LOG_BURST, DEFAULT_LOG_INTERVAL, LogLimiter, summary_line
from .rewrite import RewriteProbe
from .secret import SecretHeader
from .snapshot import Snapshot, SnapshotHolder

if TYPE_CHECKING:
    from .sns import SnsEndpoint

__all__ = ["OriginShield"]

logger = logging.getLogger("originshield")

#: Scope types the middleware understands; any other is not passed to the app unless listed in
#: ``pass_scope_types`` (design.md: what we do not understand, we do not pass).
_KNOWN_SCOPE_TYPES: Final = frozenset({"http", "websocket", "lifespan"})
_WS_DENIAL = "websocket.http.response"  # ASGI extension: an HTTP response instead of the handshake
_WS_POLICY_VIOLATION = 1008  # RFC 6455 7.4.1


class _Served(NamedTuple):
    """The engine in service with what runs requests through it (swapped as one reference)."""

    engine: Engine
    #: Each outcome's counter cell.
    cells: dict[Outcome, Any]
    #: Each refusal's log-line budget.
    budgets: dict[Outcome, Any]
    #: The C decider bound to the app, the counters and the budgets (``None`` without the extension).
    decider: Any


class OriginShield(Shield):
    """Admit only requests that a :class:`~originshield.policy.Policy` allows; refuse the rest early.

    Keyword options (all validated here; bad values raise :class:`~originshield.errors.ConfigError`):

    - ``ranges``: an :class:`~originshield.aws.AwsIpRanges`, a
      :class:`~originshield.snapshot.SnapshotHolder` (e.g. ``originshield.Refresher``), or
      ``None`` for the snapshot embedded in the package. With a holder, the middleware subscribes
      and recompiles every policy's radix tree inside the listener (in the publisher's thread), then
      swaps one reference to a new immutable engine; a listener error (e.g. a selection that
      became empty) vetoes the swap. If the holder has ``start()`` /
      ``stop(timeout)`` and ``manage_refresher`` is true, it is started on lifespan startup (or on
      the first request when the server runs no lifespan) and stopped on lifespan shutdown; every
      lifespan message still passes through unchanged.
    - ``default``: the policy for paths no route covers; ``None`` means
      :meth:`Policy.cloudfront` (origin-facing edges + secret), which needs ``secret``.
    - ``routes``: :class:`~originshield.policy.Route` objects; the longest matching prefix wins.
    - ``trusted_proxies``: CIDRs of your own proxies (ALB subnets; ``127.0.0.1/32`` behind a local
      nginx). Forwarding headers are read only from these peers.
    - ``secret``: the :class:`~originshield.secret.SecretHeader`; it is stripped from every request
      before the app runs.
    - ``geoip``: a :class:`~originshield.policy.CountryResolver` for country rules, asked on every
      decision of a route with country rules (a reload takes effect at once: nothing is cached here).
    - ``report_only``: decide, log and count, but let every request through (safe rollout).
    - ``status`` / ``body``: the refusal (default 403, ``Forbidden``); never says why.
    - ``cache_size``: deprecated and ignored (there is no decision cache since issue 12; passing it
      warns with :class:`DeprecationWarning`).
    - ``log_level``: level of the one-line log record of a refusal (allowed requests are not
      logged: the counters count them, and the hot path stays free of logging calls).
    - ``log_burst`` / ``log_interval``: refusal lines are rate-limited per (route, reason): the
      first ``log_burst`` lines of every ``log_interval`` seconds in full, then one summary line with
      the number suppressed (:mod:`originshield.ratelimit`; counted in
      :attr:`Counters.suppressed <originshield.metrics.Counters.suppressed>`).
    - ``pass_scope_types``: ASGI scope types other than http, websocket and lifespan to pass to the
      app unchanged (e.g. a server extension's own type). Any other type is not passed (logged once
      per type): a request we cannot decide must not reach the app undecided.
    - ``counters``: a :class:`~originshield.metrics.Counters` to share; a new one by default.
    - ``sns``: an :class:`~originshield.sns.SnsEndpoint`: AWS's ``AmazonIpSpaceChanged`` notices,
      served on its path under its own policy (a route added here), nudge the refresher.
    - ``detect_proxy_rewrite``: on lifespan startup and the first requests, look for a server or a
      proxy-fix middleware that rewrote ``scope["client"]`` and log how to turn it off
      (:mod:`originshield.rewrite`; until the probe has seen its first requests they are decided
      in Python, then the C decider takes over).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ranges: AwsIpRanges | SnapshotHolder | None = None,
        default: Policy | None = None,
        routes: Sequence[Route] = (),
        trusted_proxies: Iterable[str | Network] = (),
        secret: SecretHeader | None = None,
        geoip: CountryResolver | None = None,
        report_only: bool = False,
        status: int = 403,
        body: bytes = b"Forbidden\n",
        cache_size: int | None = None,
        manage_refresher: bool = True,
        log_level: int = logging.INFO,
        log_burst: int = DEFAULT_LOG_BURST,
        log_interval: float = DEFAULT_LOG_INTERVAL,
        pass_scope_types: Iterable[str] = (),
        counters: Counters | None = None,
        warn_shared_pools: bool = True,
        sns: SnsEndpoint | None = None,
        detect_proxy_rewrite: bool = True,
    ) -> None:
        self._app = app
        self._probe = RewriteProbe() if detect_proxy_rewrite else None
        if secret is not None and not isinstance(secret, SecretHeader):
            raise ConfigError(f"secret: expected a SecretHeader, got {type(secret).__name__}")
        if default is None:
            if secret is None:
                raise ConfigError(
                    "secret: the default policy (CloudFront origin-facing + secret header) needs "
                    "secret=SecretHeader.from_env(...); or pass an explicit default policy"
                )
            default = Policy.cloudfront("cloudfront-default")
        if not isinstance(default, Policy):
            raise ConfigError(f"default: expected a Policy, got {type(default).__name__}")
        routes = tuple(routes)
        for i, route in enumerate(routes):
            if not isinstance(route, Route):
                raise ConfigError(f"routes[{i}]: expected a Route, got {type(route).__name__}")
        for policy in (default, *(r.policy for r in routes)):
            where = f"policy {policy.name!r}"
            if (policy.require_secret or policy.viewer_address_header or policy.viewer_country_header) and (
                secret is None
            ):
                raise ConfigError(f"{where}: uses the secret header but no secret is configured")
            if policy.has_country_rules and geoip is None and not policy.viewer_country_header:
                raise ConfigError(f"{where}: country rules need geoip= or viewer_country_header=True")
        if geoip is not None and not callable(getattr(geoip, "country", None)):
            raise ConfigError("geoip: expected an object with a country(packed) method")
        if warn_shared_pools:  # once per distinct policy; the config loader words its own (file, key)
            for policy in dict.fromkeys((default, *(r.policy for r in routes))):
                if (risk := policy.shared_pool_risk) is not None:
                    pools = ", ".join(s.name for s in policy.selectors)
                    logger.warning(
                        "policy %r allows %s without requiring the secret header: %s", policy.name, pools, risk
                    )
        if sns is not None:  # after the shared-pool warning: the endpoint verifies SNS signatures itself
            if not callable(getattr(sns, "wrap", None)) or not isinstance(getattr(sns, "route", None), Route):
                raise ConfigError(f"sns: expected an originshield.sns.SnsEndpoint, got {type(sns).__name__}")
            self._app = app = sns.wrap(app)
            routes = (*routes, sns.route)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"status: must be an HTTP error status (400-599), got {status!r}")
        if not isinstance(body, bytes) or len(body) > 1024:
            raise ConfigError("body: must be bytes of at most 1024 bytes (a refusal never explains itself)")
        if cache_size is not None:
            warnings.warn(
                "OriginShield(cache_size=...) is ignored: every request is decided whole, with no decision cache",
                DeprecationWarning,
                stacklevel=2,
            )
        if isinstance(pass_scope_types, str):
            raise ConfigError(f"pass_scope_types: expected a list of scope types, got the string {pass_scope_types!r}")
        passed = frozenset(pass_scope_types)
        if not all(isinstance(t, str) for t in passed) or passed & _KNOWN_SCOPE_TYPES:
            raise ConfigError(
                f"pass_scope_types: scope types other than http, websocket and lifespan, got {sorted(map(str, passed))}"
            )

        if ranges is None:
            holder = SnapshotHolder(load_ranges(), "embedded")
        elif isinstance(ranges, AwsIpRanges):
            holder = SnapshotHolder(ranges, "file")
        elif isinstance(ranges, SnapshotHolder):
            holder = ranges
        else:
            raise ConfigError(f"ranges: expected AwsIpRanges, SnapshotHolder or None, got {type(ranges).__name__}")

        self.holder = holder
        self.counters = counters if counters is not None else Counters()
        #: The refusal log-line budgets (their suppressed lines are counted in ``counters``).
        self.log_limiter = LogLimiter(self.counters, log_burst, log_interval)
        self._pass_scope_types = passed
        self._unknown_scope_types: set[str] = set()  # logged once each
        self._default = default
        self._routes = routes
        self._trusted = TrustedProxies(trusted_proxies)
        self._secret = secret
        self._geoip = geoip
        self.report_only = bool(report_only)
        self._log_level = log_level
        self._status = status
        self._body = body
        self._reject_headers = (
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
        )
        self._refuse = self._refusal()
        self._swap_lock = threading.Lock()  # serialises writers of _state; requests never take it
        self._lazy_start = False
        self._fast: object = None  # the bound C decider (_speedups.Decider) __call__ runs
        expose_call(self, self._handle)
        # Compile against the snapshot in service now: a configuration error surfaces here.
        self._state: _Served = self._serve(self._compile(holder.current))  # also creates the counter cells
        self.counters.add_gauge("ranges_generation", "Generation of the ranges snapshot in use.", self._gen)
        self.counters.add_gauge("ranges_sync_token", "syncToken of the ranges in use.", self._sync)
        holder.subscribe(self._on_snapshot)

        self._manage = bool(manage_refresher) and callable(getattr(holder, "start", None))
        self._start_lock = threading.Lock()
        self._started = False
        self._lazy_start = self._manage
        self._set_state(self._state)

    # -- compiled state ------------------------------------------------------------------------------

    def _compile(self, snap: Snapshot) -> Engine:
        return Engine(
            default=self._default,
            routes=self._routes,
            ranges=snap.ranges,
            generation=snap.generation,
            source=snap.source,
            trusted=self._trusted,
            secret=self._secret,
            geoip=self._geoip,
            report_only=self.report_only,
            stale_reject=snap.stale_reject,
        )

    def _serve(self, engine: Engine) -> _Served:
        # The counters' cells and the log budgets live here, across engines (keyed by route and
        # reason); each engine's outcomes get theirs once, off the request path.
        cells = {o: self.counters.cell(o.counter_key) for o in engine.outcomes()}
        budgets = {o: self.log_limiter.budget(o.log_key) for o in cells if not o.allowed}
        bind = Bind(self._app, self._refuse, self._log_refusal)
        return _Served(engine, cells, budgets, bound_decider(engine, bind, cells.__getitem__, budgets.get))

    @property
    def app(self) -> ASGIApp:
        """The wrapped ASGI app (assigning it rebinds the C decider as well)."""
        return self._app

    @app.setter
    def app(self, app: ASGIApp) -> None:
        with self._swap_lock:
            self._app = app
            self._set_state(self._serve(self._state.engine))

    def _set_state(self, served: _Served) -> None:
        # Writers hold _swap_lock (or run in __init__). While the refresher waits for its lazy start
        # on the first request, or the proxy-rewrite probe watches the first requests, __call__ must
        # reach _handle, so the C decider stays out of the way.
        self._state = served
        self._fast = None if self._lazy_start or self._probe is not None else served.decider

    def _on_snapshot(self, snap: Snapshot) -> Callable[[], None]:
        # Prepare phase, in the publisher's thread: build everything off the request path. Raising
        # (e.g. a selection became empty) vetoes the swap and keeps the current data everywhere.
        served = self._serve(self._compile(snap))

        def commit() -> None:  # once every listener prepared: one assignment
            with self._swap_lock:
                self._set_state(served)

        return commit

    def _gen(self) -> float:
        return float(self._state.engine.generation)

    def _sync(self) -> float:
        return float(self._state.engine.sync_token)

    @property
    def engine(self) -> Engine:
        """The compiled engine in service (read it once and keep the local)."""
        return self._state.engine

    def explain(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] = (),
        peer: str | None = None,
    ) -> Decision:
        """The full decision for a request described by hand (the CLI ``explain`` command).

        ``peer`` is the socket peer address (``None``: a unix socket). Counts nothing, logs nothing;
        the trace shows the secret's verdict, never its value. A refusal's log line is exactly
        ``explain(...).log_line()`` for the same request (the record's logger is ``originshield``).
        """
        return self._state.engine.explain(method, path, headers, peer)

    def policies(self) -> tuple[PolicyReport, ...]:
        """Each policy with its routes and the records/CIDRs of its compiled tree (``export``)."""
        return self._state.engine.policy_reports()

    # -- refresher lifecycle -------------------------------------------------------------------------

    def _start_holder(self) -> None:
        with self._start_lock:
            self._lazy_start = False
            with self._swap_lock:
                self._set_state(self._state)
            if self._started:
                return
            self._started = True
        self.holder.start()  # type: ignore[attr-defined]

    def _stop_holder(self) -> None:
        with self._start_lock:
            if not self._started:
                return
            self._started = False
            self._lazy_start = self._manage
            with self._swap_lock:
                self._set_state(self._state)
        self.holder.stop(5.0)  # type: ignore[attr-defined]

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_manage() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                self._start_holder()  # start() only spawns a thread
                # With stale_action = "reject" and stale data, ready only after the first fetch
                # attempt (bounded by its deadline): else every request of a fresh start is refused.
                wait = getattr(self.holder, "wait_first_attempt", None)
                if wait is not None:
                    import anyio.to_thread  # noqa: PLC0415

                    await anyio.to_thread.run_sync(wait)
                log_startup(self)
            elif kind == "lifespan.shutdown":
                import anyio.to_thread  # noqa: PLC0415 - only at shutdown; stop() joins a thread

                self.flush_log_summaries()
                await anyio.to_thread.run_sync(self._stop_holder)
            return message

        await self.app(scope, receive_and_manage, send)

    # -- ASGI ----------------------------------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The whole request in Python: __call__ without the C extension (the reference of what the
        # C decider's admit does), and what the C path leaves to Python (lifespan, other types).
        kind = scope.get("type")
        if kind in {"http", "websocket"}:
            if self._lazy_start:
                self._start_holder()
            if self._probe is not None and not self._probe.observe(scope):
                # The probe has seen its first requests: from now on the C decider takes them all.
                with self._swap_lock:
                    self._probe = None
                    self._set_state(self._state)
            served = self._state  # read once: this request decides with one generation throughout
            engine = served.engine
            method = scope.get("method") if kind == "http" else "GET"  # a websocket handshake is a GET
            path, client, headers = scope.get("path"), scope.get("client"), scope.get("headers")
            verdict = engine.decide(method, path, client, headers)
            outcome = verdict.outcome
            served.cells[outcome].value += 1
            if not outcome.allowed:
                summarised = served.budgets[outcome].take(time.monotonic())
                if summarised >= 0:
                    self._log_line(outcome, summarised, engine.decision(verdict, method, path, client))
            if outcome.passes:  # allowed, or report-only
                if verdict.strip is not None:  # a list loses the secret in place; another sequence is replaced
                    scope["headers"] = engine.strip_secret(headers, verdict.strip)
                await self._app(scope, receive, send)  # not the property: ~500 instructions a request
            else:
                await self._refuse(scope, send)
        elif kind == "lifespan":
            if self._probe is not None:
                self._probe.startup()
            if self._manage:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        elif kind in self._pass_scope_types:
            await self.app(scope, receive, send)
        else:
            self._unknown_scope_type(kind)

    def _unknown_scope_type(self, kind: object) -> None:
        # Not passed: the app would run without any decision. Returning without a message is what
        # an app that does not support a scope type does (ASGI spec, "Applications").
        shown = repr(kind)[:64]
        if shown not in self._unknown_scope_types and len(self._unknown_scope_types) < 64:
            self._unknown_scope_types.add(shown)
            logger.warning(
                "originshield: ASGI scope type %s not passed to the app (list it in pass_scope_types to allow it)",
                shown,
            )

    def _log_refusal(self, scope: Scope, outcome: Outcome, summarised: int) -> None:
        """The C decider's refusal that the rate limiter lets through: the trace is rebuilt by the
        Python reference, from the same scope (before any header was stripped)."""
        engine = self._state.engine
        kind = scope.get("type")
        method = scope.get("method") if kind == "http" else "GET"
        path, client = scope.get("path"), scope.get("client")
        decision = engine.decision(engine.decide(method, path, client, scope.get("headers")), method, path, client)
        if decision.reason != outcome.reason or decision.route != outcome.route:
            # Both implementations must agree (the tests and the fuzzer check it); if a build ever
            # does not, say so loudly: the counters hold C's verdict, the line the reference's.
            logger.error(
                "originshield internal: C decided %s/%s, the reference %s/%s",
                outcome.route,
                outcome.reason,
                decision.route,
                decision.reason,
            )
        self._log_line(outcome, summarised, decision)

    def _log_line(self, outcome: Outcome, summarised: int, decision: Decision) -> None:
        summary_line(logger, self._log_level, outcome.log_key, summarised, self.log_limiter.interval)
        if logger.isEnabledFor(self._log_level):
            logger.log(self._log_level, "%s", decision.log_line())

    def flush_log_summaries(self) -> None:
        """Log the summary line of every (route, reason) with suppressed lines not yet summed up
        (called on lifespan shutdown; otherwise each is logged before that key's next line)."""
        self.log_limiter.flush(logger, self._log_level)

    if TYPE_CHECKING:

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    elif not C_CALL:
        __call__ = _handle
    # Else the C base class's __call__: an http or websocket request is decided, counted, and either
    # loses the secret header and goes to the app (its own awaitable is returned: no coroutine frame
    # of ours per request) or is answered by _refuse; the rest goes to _handle. A __call__ defined
    # here, even the same C callable, would put Python's slot dispatch back on every request (a type
    # lookup, a bound call, an attribute read: ~450 instructions).

    def _refusal(self) -> Callable[[Scope, Send], Awaitable[None]]:
        # A closure over the response parts: a refusal flood runs it once per request, and local
        # reads cost less than attribute lookups on the middleware (~500 instructions a refusal).
        status, body, websocket = self._status, self._body, self._reject_websocket
        content_type, content_length, cache_control = self._reject_headers

        async def refuse(scope: Scope, send: Send) -> None:
            if scope["type"] == "http":
                # A fresh headers list each time: outer middlewares may edit response headers in place.
                headers = [content_type, content_length, cache_control]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:
                await websocket(scope, send)

        return refuse

    async def _reject_websocket(self, scope: Scope, send: Send) -> None:
        extensions = scope.get("extensions") or {}
        if _WS_DENIAL in extensions:
            await send(
                {"type": "websocket.http.response.start", "status": self._status, "headers": list(self._reject_headers)}
            )
            await send({"type": "websocket.http.response.body", "body": self._body})
        else:
            # Closing before accept makes the server answer the handshake with HTTP 403 (ASGI spec,
            # "Close - send event"); the app never sees the connection.
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})

    def __repr__(self) -> str:
        state = self._state.engine
        return (
            f"OriginShield(routes={[r.name for r in state.routes] + [DEFAULT_ROUTE]}, "
            f"generation={state.generation}, report_only={self.report_only})"
        )


enable_vectorcall(OriginShield)
