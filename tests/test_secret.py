"""The secret header value object: validation, sources, constant-time verification, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from originshield.errors import ConfigError
from originshield.secret import MIN_SECRET_LENGTH, SecretHeader

NEW = "new-secret-0123456789abcdef"
OLD = "old-secret-0123456789abcdef"


def test_rotation_accepts_old_and_new() -> None:
    secret = SecretHeader.of("X-Origin-Verify", [NEW, OLD])
    assert secret.name == "x-origin-verify"
    assert secret.header == b"x-origin-verify"
    assert secret.verify(NEW.encode())
    assert secret.verify(OLD.encode())
    assert not secret.verify(NEW.encode()[:-1])  # wrong length
    assert not secret.verify(NEW.encode() + b"x")
    assert not secret.verify(b"")
    assert not secret.verify(NEW.upper().encode())


def test_repr_never_shows_values() -> None:
    secret = SecretHeader.of("x-origin-verify", [NEW, OLD])
    assert NEW not in repr(secret) and OLD not in repr(secret)
    assert "2 redacted" in repr(secret)
    assert NEW not in str(secret)


def test_from_env() -> None:
    secret = SecretHeader.from_env("x-origin-verify", "SHIELD_TEST", environ={"SHIELD_TEST": f" {NEW} , {OLD} ,"})
    assert secret.values == (NEW.encode(), OLD.encode())
    with pytest.raises(ConfigError, match="SHIELD_TEST is not set"):
        SecretHeader.from_env("x-origin-verify", "SHIELD_TEST", environ={})


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"# rotated 2026-11-01\n{NEW}\n\n{OLD}\n", encoding="utf-8")
    assert SecretHeader.from_file(path).values == (NEW.encode(), OLD.encode())
    with pytest.raises(ConfigError, match="cannot read"):
        SecretHeader.from_file(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("x origin", [NEW], "not an HTTP field name"),
        ("", [NEW], "not an HTTP field name"),
        ("x-forwarded-for", [NEW], "reserved"),
        ("Host", [NEW], "reserved"),
        ("x-origin-verify", [], "no accepted values"),
        ("x-origin-verify", ["short"], f"at least {MIN_SECRET_LENGTH}"),
        ("x-origin-verify", ["has space 0123456789abc"], "visible ASCII"),
        ("x-origin-verify", ["has,comma,0123456789abc"], "visible ASCII"),
        ("x-origin-verify", ["caf\u00e9-0123456789abcdef"], "visible ASCII"),
    ],
)
def test_config_errors(name: str, values: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        SecretHeader.of(name, values)
    for value in values:
        if len(value) >= 8:
            assert value not in str(info.value)  # a rejected secret is not echoed either


def test_single_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="single string"):
        SecretHeader("x-origin-verify", NEW)  # type: ignore[arg-type]
