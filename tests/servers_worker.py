"""gunicorn's uvicorn worker with proxy-header rewriting off, as the README recommends.

In its own module: importing ``uvicorn.workers`` imports gunicorn, which the other servers' processes
must not have loaded (``originshield.rewrite.detect_server`` judges the server from its modules).
"""

from uvicorn.workers import UvicornWorker


class NoProxyHeadersWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "proxy_headers": False}  # noqa: RUF012 - as uvicorn declares it
