"""The operator command line: ``originshield COMMAND ...`` (also ``python -m originshield``).

Exit codes, shared by every command: 0 success (for ``lookup``: the address matched), 1 a negative
answer (``lookup``: no match; ``explain``: refused; ``diff``: changed; ``check-config``: invalid;
``status``: stale; ``fetch``: failed or refused; ``demo --check``: a decision not as expected), 2 bad
input or usage (one line on stderr; bare ``originshield`` prints the usage), 141 when the reader of
stdout went away (``| head``), silently.

One module per command group, each command a ``_cmd_*`` function and an ``add_*`` function that
registers its parser: :mod:`.ranges` (lookup, diff, export), :mod:`.check` (check-config, explain),
:mod:`.refresher` (status, fetch), :mod:`.serving` (serve, demo; the demo itself in :mod:`.demo`),
:mod:`.replay`; :mod:`.main` builds the parser, :mod:`.common` holds what they share.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
