"""Keeping the served ip-ranges document fresh: the refresher and its parts.

One job per module (read in this order):

- :mod:`.scheduler`: :class:`Refresher`, the snapshot holder and its background thread (start,
  stop, fork handling, the watched files, the operator's calls).
- :mod:`.update`: one update, fetch -> parse -> validate -> guard -> publish, and the cache
  coordination between the processes of a host.
- :mod:`.fetch`: the bounded, conditional download; :mod:`.worker`: the parse worker process;
  :mod:`.guard`: the shrink guard; :mod:`.cachefile`: the durable cache of the served state;
  :mod:`.status`: what a refresh and the refresher report.
"""

from .scheduler import Refresher
from .status import Freshness, HeldRecord, RefresherStatus, RefreshResult, StaleAction, WatcherStatus

__all__ = ["Freshness", "HeldRecord", "RefreshResult", "Refresher", "RefresherStatus", "StaleAction", "WatcherStatus"]
