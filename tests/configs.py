"""Configuration text shared by the config and CLI tests: topology 2 (CloudFront -> ALB -> app) on the
embedded snapshot, with the ALB health-check exemption."""

from __future__ import annotations


def alb_config(secret_env: str, *, health_methods: bool = True) -> str:
    """The secret comes from ``secret_env``; ``health_methods`` limits the health route to GET."""
    methods = 'methods = ["GET"]\n' if health_methods else ""
    return f"""
default_policy = "cloudfront"
trusted_proxies = ["10.0.0.0/16"]
[ranges]
source = "embedded"
[secret]
env = "{secret_env}"
[policies.cloudfront]
selectors = ["cloudfront-origin-facing"]
require_secret = true
[policies.health]
cidrs = ["10.0.0.0/16"]
source = "peer"
[[routes]]
prefix = "/health"
policy = "health"
{methods}"""
