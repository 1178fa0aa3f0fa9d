"""``originshield export``: a policy's address set for nftables, ipset, iptables, nginx, cidr and json.

Every format is parsed here (always) and, where the machine has the tool, also checked by the tool
itself: ``nft -c -f``, ``nginx -t`` with a minimal configuration including the file,
``iptables-restore --test`` / ``ip6tables-restore --test``, and ``ipset restore`` applied twice in a
throw-away network namespace (``unshare -rn``) to see the swap really replaces the live set. A missing
tool, or a kernel that refuses, skips that check with the reason; the parsing checks still run.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from originshield.aws import Network, load_ranges
from originshield.cli import main

pytestmark = pytest.mark.tooling

CONFIG = """
default_policy = "cloudfront"
[ranges]
source = "embedded"
[secret]
env = "OS_EXPORT_SECRET"
[policies.cloudfront]
selectors = ["cloudfront-origin-facing"]
require_secret = true
[policies.region]
selectors = ["region:us-east-1"]
source = "direct"
[policies.office]
cidrs = ["198.51.100.0/24", "198.51.100.128/25", "2001:db8:10::/48"]
source = "direct"
[[routes]]
prefix = "/r"
policy = "region"
[[routes]]
prefix = "/admin"
policy = "office"
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("export") / "originshield.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def expected() -> dict[str, tuple[list[Network], list[Network]]]:
    """Collapsed prefixes per policy, computed independently of the exporter."""
    ranges = load_ranges(None)
    out: dict[str, tuple[list[Network], list[Network]]] = {}
    for name, preset in (("cloudfront", "cloudfront-origin-facing"), ("region", "region:us-east-1")):
        found = ranges.preset(preset).prefixes()
        v4: list[Network] = list(ipaddress.collapse_addresses(n for n in found if n.version == 4))
        v6: list[Network] = list(ipaddress.collapse_addresses(n for n in found if n.version == 6))
        out[name] = (v4, v6)
    out["office"] = ([ipaddress.ip_network("198.51.100.0/24")], [ipaddress.ip_network("2001:db8:10::/48")])
    return out


def export(config: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["export", "--config", config, *args]) == 0
    return capsys.readouterr().out


def nets(texts: list[str]) -> list[Network]:
    return [ipaddress.ip_network(t) for t in texts]


def split(found: list[Network]) -> tuple[list[Network], list[Network]]:
    return [n for n in found if n.version == 4], [n for n in found if n.version == 6]


def no_overlap(found: list[Network]) -> bool:
    return all(not a.overlaps(b) for i, a in enumerate(found) for b in found[i + 1 :] if a.version == b.version)


# -- parsing checks (always run) --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["cloudfront", "region", "office"])
def test_nftables_one_transaction_flush_and_refill(
    config: str,
    capsys: pytest.CaptureFixture[str],
    expected: dict[str, tuple[list[Network], list[Network]]],
    policy: str,
) -> None:
    text = export(config, capsys, "--format", "nftables", "--policy", policy)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    table = f"originshield_{policy}"
    assert lines[0] == f"add table inet {table}"
    elements: dict[str, list[Network]] = {"allowed_v4": [], "allowed_v6": []}
    state: dict[str, str] = {}
    for line in lines[1:]:
        m = re.fullmatch(rf"add set inet {table} (allowed_v[46]) \{{ type (ipv[46])_addr; flags interval; \}}", line)
        if m:
            assert m.group(1)[-1] == m.group(2)[-1]
            state[m.group(1)] = "created"
            continue
        m = re.fullmatch(rf"flush set inet {table} (allowed_v[46])", line)
        if m:
            assert state.pop(m.group(1)) == "created"  # flushed right after its (idempotent) creation
            state[m.group(1)] = "flushed"
            continue
        m = re.fullmatch(rf"add element inet {table} (allowed_v[46]) \{{ (.+) \}}", line)
        assert m, f"unexpected line: {line}"
        assert state[m.group(1)] == "flushed"
        elements[m.group(1)] += nets(m.group(2).split(", "))
    assert state == {"allowed_v4": "flushed", "allowed_v6": "flushed"}
    assert (elements["allowed_v4"], elements["allowed_v6"]) == expected[policy]
    # Interval sets refuse overlapping elements: AWS lists overlapping prefixes, so collapse is needed.
    assert no_overlap(elements["allowed_v4"] + elements["allowed_v6"])


def test_ipset_restore_fills_a_temporary_set_then_swaps(
    config: str, capsys: pytest.CaptureFixture[str], expected: dict[str, tuple[list[Network], list[Network]]]
) -> None:
    text = export(config, capsys, "--format", "ipset", "--policy", "region")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    members: dict[str, list[Network]] = {}
    order: list[str] = []
    for line in lines:
        words = line.split()
        order.append(words[0])
        assert all(len(w) <= 31 for w in words[1:3] if not w[0].isdigit())  # ipset name limit
        if words[0] == "create":
            assert words[2] == "hash:net" and words[-1] == "-exist"
        elif words[0] == "add":
            members.setdefault(words[1], []).append(ipaddress.ip_network(words[2]))
    assert order.count("swap") == 2 and order.count("destroy") == 2
    assert members == {
        "originshield_region_v4_tmp": expected["region"][0],
        "originshield_region_v6_tmp": expected["region"][1],
    }
    swaps = [line.split()[1:] for line in lines if line.startswith("swap ")]
    assert swaps == [
        ["originshield_region_v4_tmp", "originshield_region_v4"],
        ["originshield_region_v6_tmp", "originshield_region_v6"],
    ]


@pytest.mark.parametrize("version", [4, 6])
def test_iptables_restore_input_replaces_one_chain(
    config: str,
    capsys: pytest.CaptureFixture[str],
    expected: dict[str, tuple[list[Network], list[Network]]],
    version: int,
) -> None:
    text = export(config, capsys, "--format", "iptables", "--ip-version", str(version), "--name", "ORIGIN")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[:2] == ["*filter", ":ORIGIN - [0:0]"] and lines[-2:] == ["-A ORIGIN -j DROP", "COMMIT"]
    sources = [re.fullmatch(r"-A ORIGIN -s (\S+) -j ACCEPT", line) for line in lines[2:-2]]
    assert all(sources)
    assert nets([m.group(1) for m in sources if m]) == expected["cloudfront"][version == 6]


def test_iptables_without_ip_version_is_refused(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--config", config, "--format", "iptables"]) == 2
    assert "choose --ip-version 4 (iptables-restore) or 6" in capsys.readouterr().err


def test_nginx_allow_list_ends_with_deny_all(
    config: str, capsys: pytest.CaptureFixture[str], expected: dict[str, tuple[list[Network], list[Network]]]
) -> None:
    text = export(config, capsys, "--format", "nginx", "--policy", "office")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[-1] == "deny all;"
    allowed = [re.fullmatch(r"allow (\S+);", line) for line in lines[:-1]]
    assert all(allowed)
    assert split(nets([m.group(1) for m in allowed if m])) == expected["office"]


def test_cidr_and_json(
    config: str, capsys: pytest.CaptureFixture[str], expected: dict[str, tuple[list[Network], list[Network]]]
) -> None:
    text = export(config, capsys, "--format", "cidr")  # the default policy
    assert split(nets(text.split())) == expected["cloudfront"]
    assert split(nets(export(config, capsys, "--format", "cidr", "--ip-version", "6").split())) == (
        [],
        expected["cloudfront"][1],
    )
    doc = json.loads(export(config, capsys, "--format", "json", "--policy", "region"))
    assert doc["policy"] == "region" and doc["sync_token"] == load_ranges(None).sync_token
    assert (nets(doc["ipv4"]), nets(doc["ipv6"])) == expected["region"]


def test_output_file_is_written_atomically(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "allow.conf"
    target.write_text("old\n")
    assert main(["export", "--config", config, "--format", "nginx", "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text().rstrip().endswith("deny all;")
    assert [p.name for p in tmp_path.iterdir()] == ["allow.conf"]  # no temporary file left behind


def test_unknown_policy_and_ranges_override(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--config", config, "--format", "cidr", "--policy", "cloudfrnt"]) == 2
    assert "no policy 'cloudfrnt'" in capsys.readouterr().err
    old = Path(__file__).parent / "data" / "aws" / "history" / "ip-ranges-1786397225.json.gz"
    text = export(config, capsys, "--format", "cidr", "--ranges", str(old))
    assert "24.110.128.0/17" not in text.split()  # joined CloudFront later (PROVENANCE.md)
    assert "24.110.128.0/17" in export(config, capsys, "--format", "cidr").split()


# -- the real tools ---------------------------------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None)
    if path is None:
        pytest.skip(f"{name} is not installed on this machine (the parsing checks above still ran)")
    return path


def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30, check=False)


def refused_by_kernel(result: subprocess.CompletedProcess[str]) -> bool:
    text = (result.stderr + result.stdout).lower()
    return any(
        word in text for word in ("permission denied", "operation not permitted", "not supported", "protocol not")
    )


@pytest.fixture(scope="module")
def netns() -> list[str]:
    """A prefix that runs a command in a new, throw-away user + network namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not available: no throw-away network namespace")
    probe = run([unshare, "-rn", "true"])
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    return [unshare, "-rn"]


@pytest.mark.parametrize("policy", ["cloudfront", "region"])
def test_nft_accepts_the_file(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str) -> None:
    nft = tool("nft")
    path = tmp_path / "set.nft"
    path.write_text(export(config, capsys, "--format", "nftables", "--policy", policy))
    result = run([nft, "-c", "-f", str(path)])
    if result.returncode != 0 and refused_by_kernel(result):
        pytest.skip(f"nft -c needs netlink access the kernel refuses here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr


def test_nginx_accepts_the_include(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nginx = tool("nginx")
    (tmp_path / "allow.conf").write_text(export(config, capsys, "--format", "nginx"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {tmp_path}/body;\n"
        "  server {\n    listen 127.0.0.1:18080;\n"
        f"    location / {{ include {tmp_path}/allow.conf; return 204; }}\n  }}\n}}\n"
    )
    result = run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.parametrize("version", [4, 6])
def test_iptables_restore_accepts_the_input(
    config: str, capsys: pytest.CaptureFixture[str], netns: list[str], version: int
) -> None:
    restore = tool("iptables-restore" if version == 4 else "ip6tables-restore")
    text = export(config, capsys, "--format", "iptables", "--ip-version", str(version))
    result = run([*netns, restore, "--test", "--noflush"], text)
    if result.returncode != 0 and refused_by_kernel(result):
        pytest.skip(f"{restore} --test is refused by the kernel here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr


def test_ipset_restore_swaps_the_live_set(
    config: str,
    capsys: pytest.CaptureFixture[str],
    netns: list[str],
    expected: dict[str, tuple[list[Network], list[Network]]],
) -> None:
    ipset = tool("ipset")
    first = export(config, capsys, "--format", "ipset", "--policy", "office")
    second = export(config, capsys, "--format", "ipset")  # cloudfront, into differently named sets
    second = second.replace("originshield_cloudfront", "originshield_office")
    # Apply the office set, then the CloudFront one over it: the live set must hold exactly the new
    # members afterwards (swapped, not merged), and no temporary set may remain.
    script = f"{ipset} restore <<'A'\n{first}A\n{ipset} restore <<'B'\n{second}B\n{ipset} list -n\n"
    script += f"{ipset} list originshield_office_v4\n"
    result = run([*netns, "sh", "-c", script])
    if result.returncode != 0 and refused_by_kernel(result):
        pytest.skip(f"ipset is refused by the kernel here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    names = out.split("Name:")[0].split()
    assert sorted(names) == ["originshield_office_v4", "originshield_office_v6"]
    members = out.split("Members:")[1].split()
    assert sorted(nets(members), key=lambda n: n.network_address) == expected["cloudfront"][0]
