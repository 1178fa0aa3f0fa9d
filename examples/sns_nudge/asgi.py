"""Topology 2 (CloudFront -> ALB -> app) with AWS's ``AmazonIpSpaceChanged`` SNS notices nudging
the refresher; polling every 10 minutes stays the source of truth. Run from the repository root::

    pip install 'originshield[sns]'
    ORIGINSHIELD_SECRET=... uvicorn examples.sns_nudge.asgi:app --no-proxy-headers --host 0.0.0.0

then subscribe the endpoint (the topic lives in us-east-1; the confirmation is answered by the
endpoint itself)::

    aws sns subscribe --region us-east-1 \\
        --topic-arn arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged \\
        --protocol https --notification-endpoint https://origin.example.com/_originshield/sns
"""

import os

from examples.app import app as origin
from originshield import OriginShield, Policy, Refresher, Route, SecretHeader, Selector
from originshield.sns import SnsEndpoint

VPC = "10.0.0.0/16"  # the ALB subnets (your VPC CIDR)

refresher = Refresher(
    os.environ.get("ORIGINSHIELD_RANGES_SOURCE", "https://ip-ranges.amazonaws.com/ip-ranges.json"),
    cache_dir=os.environ.get("ORIGINSHIELD_CACHE_DIR", "/var/cache/originshield"),
    selectors=[Selector.preset("cloudfront-origin-facing")],
)
# POST /_originshield/sns, admitted from AWS us-east-1 addresses (the client behind the ALB), then
# verified: signature, certificate host, topic, age, replay. A valid notice makes the refresher
# fetch now and apply the document only if its MD5 is the one announced.
sns = SnsEndpoint(refresher)
app = OriginShield(
    origin,
    ranges=refresher,  # started on lifespan startup, stopped on shutdown
    secret=SecretHeader.from_env("x-origin-verify", "ORIGINSHIELD_SECRET"),
    trusted_proxies=[VPC],
    routes=[Route("/health", Policy.health_check([VPC]), methods=frozenset({"GET", "HEAD"}))],
    sns=sns,
)
