"""The example app wrapped by the middleware from ``originshield.toml`` next to this file, for plain
uvicorn (run from the repository root; keep uvicorn's proxy-header rewriting off)::

    uvicorn examples.vpc_origin.asgi:app --no-proxy-headers
"""

from pathlib import Path

from examples.app import app as origin
from originshield.config import load_config

app = load_config(Path(__file__).with_name("originshield.toml")).build(origin)
