"""The originshield benchmark suite: ``python -m benchmarks [--quick] [--out DIR]``.

Sections (each a module with ``run(quick) -> Section``): ``lookup`` (radix tree vs pytricia, py-radix,
netaddr, awsipranges, an ``ipaddress`` scan; build time and memory), ``asgi`` (middleware called
directly, no server), ``e2e`` (uvicorn + wrk: throughput and latency against the bare app and the
peers, reload under load, GeoIP cost). ``report`` turns the sections into Markdown and PNG plots.

Performance is never asserted in the test suite: the machine is shared and noisy. The suite reports
medians over interleaved rounds and ratios measured in the same run, which are what the goals in the
issues are stated in.
"""

__all__: list[str] = []
