"""Topology 4, CloudFront VPC origins: ``Policy.vpc_origin``, the ``cloudfront-vpc-origin`` preset
of the configuration file, and ``examples/vpc_origin/`` deciding as the topology says (Starlette
TestClient with the peer addresses of that topology, as ``tests/test_examples.py`` does for the
other three)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from originshield import ConfigError, Policy
from originshield.cli import main
from originshield.config import loads_config
from tests.environment import EDGE, EXAMPLES, SECRET, VIEWER, asgi

ALB_NODE = "10.0.12.34"  # an internal ALB node in the VPC (10.0.0.0/16)
VPC_ORIGIN_ENI = "10.0.44.5"  # the VPC origin's network interface, in a private subnet


def test_check_config_accepts_the_example(examples_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLES / "vpc_origin" / "originshield.toml")]) == 0
    out = capsys.readouterr().out
    assert "vpc-origin: source=peer require_secret=true" in out and "cdn-proxy" not in out


def test_topology_4_vpc_origin(examples_env: dict[str, str]) -> None:
    app: Any = asgi("vpc_origin")
    good = {"x-origin-verify": SECRET}
    # Internal ALB as the VPC origin: the peer is the ALB node; the ALB appended the interface.
    with TestClient(app, client=(ALB_NODE, 40000)) as alb:
        response = alb.get("/headers", headers={**good, "x-forwarded-for": f"{VIEWER}, {VPC_ORIGIN_ENI}"})
        assert response.status_code == 200 and "x-origin-verify" not in response.json()
        assert alb.get("/", headers={"x-forwarded-for": f"{VIEWER}, {VPC_ORIGIN_ENI}"}).status_code == 403
        assert alb.get("/health").status_code == 200  # the ALB's health check: path-scoped exemption
        assert alb.get("/admin").status_code == 403
    # EC2 (or NLB) as the VPC origin: the peer is the VPC origin's interface; XFF is the viewer.
    with TestClient(app, client=(VPC_ORIGIN_ENI, 40000)) as eni:
        assert eni.get("/", headers={**good, "x-forwarded-for": VIEWER}).status_code == 200
    # A public CloudFront edge never reaches a VPC origin: with the secret (leaked) it is still refused.
    with TestClient(app, client=(EDGE, 40000)) as edge:
        assert edge.get("/", headers={**good, "x-forwarded-for": VIEWER}).status_code == 403
    # Something else in your network (a peered VPC) with a forged chain naming the VPC origin.
    with TestClient(app, client=("172.31.9.9", 40000)) as peered:
        assert peered.get("/", headers={**good, "x-forwarded-for": f"{VIEWER}, {VPC_ORIGIN_ENI}"}).status_code == 403
    assert app.counters.rejected() == {"secret_missing": 2, "peer_not_allowed": 2}


def test_policy_vpc_origin_checks() -> None:
    policy = Policy.vpc_origin(["10.0.0.0/16", "100.64.0.0/16", "2600:1f18:1234::/56"])
    assert (policy.source, policy.require_secret, policy.selectors) == ("peer", True, ())
    assert policy.shared_pool_risk is None
    with pytest.raises(ConfigError, match="not private"):
        Policy.vpc_origin(["130.176.0.0/16"])  # CloudFront's public ranges are not what the origin sees
    with pytest.raises(ConfigError, match="require_secret must stay true"):
        Policy.vpc_origin(["10.0.0.0/16"], require_secret=False)
    with pytest.raises(ConfigError, match="source must be 'peer'"):
        Policy.vpc_origin(["10.0.0.0/16"], source="cloudfront")


BASE = """
default_policy = "vpc"
[ranges]
source = "embedded"
[secret]
env = "ORIGINSHIELD_SECRET"
[policies.vpc]
"""


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('preset = "cloudfront-vpc-orgin"\ncidrs = ["10.0.0.0/16"]', "did you mean 'cloudfront-vpc-origin'"),
        (
            'preset = "cloudfront-vpc-origin"\ncidrs = ["52.95.0.0/20"]',
            "policies.vpc: cidrs 52.95.0.0/20 are not private",
        ),
        ('preset = "cloudfront-vpc-origin"\ncidrs = ["10.0.0.0/16"]\nrequire_secret = false', "require_secret"),
        ('preset = "cloudfront-vpc-origin"\nselectors = ["cloudfront-origin-facing"]', "no AWS selectors"),
        ('preset = "cloudfront-vpc-origin"', "no allowed sources"),
    ],
)
def test_config_preset_errors(body: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        loads_config(BASE + body, environ={"ORIGINSHIELD_SECRET": SECRET})


def test_config_preset() -> None:
    config = loads_config(
        BASE + 'preset = "cloudfront-vpc-origin"\ncidrs = ["10.0.0.0/16"]', environ={"ORIGINSHIELD_SECRET": SECRET}
    )
    assert config.policies["vpc"] == Policy.vpc_origin(["10.0.0.0/16"], "vpc")
