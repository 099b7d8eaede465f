"""``AdminSpec`` and ``AdminToken`` (otpylib_config/admin/options.py): every bad option is
refused when the spec is made, naming the option; a token's secret never shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import ConfigSpec
from otpylib_config.admin import AdminSpec, AdminToken, AdminTokenError

SECRET = "s3cr3t-" + "k" * 20


def test_a_token_repr_and_str_never_show_the_secret() -> None:
    token = AdminToken("ops", SECRET, scope="write")
    spec = AdminSpec(tokens=[token])
    for text in (repr(token), str(token), repr(spec), repr(ConfigSpec(admin=spec))):
        assert SECRET not in text
    assert repr(token) == "AdminToken(name='ops', secret='****', scope='write')"


def test_a_token_keeps_only_a_digest_so_asdict_cannot_show_the_secret() -> None:
    import dataclasses

    token = AdminToken("ops", SECRET)
    assert not hasattr(token, "secret")
    assert SECRET not in str(dataclasses.asdict(AdminSpec(tokens=[token])))


def test_a_token_matches_its_own_secret_only() -> None:
    token = AdminToken("ops", SECRET)
    assert token.matches(SECRET.encode())
    assert not token.matches(SECRET[:-1].encode() + b"x")
    assert not token.matches(b"")


def test_write_scope_includes_read_and_read_scope_excludes_write() -> None:
    assert AdminToken("w", SECRET, "write").allows("read")
    assert AdminToken("w", SECRET, "write").allows("write")
    assert AdminToken("r", SECRET).allows("read")
    assert not AdminToken("r", SECRET).allows("write")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", SECRET), "name"),
        (("ops", "short"), "at least 16"),
        (("ops", "has a space in it ok"), "without spaces"),
        (("ops", SECRET, "admin"), "scope"),
        (("ops", 12345), "must be a str"),
    ],
)
def test_a_bad_token_is_refused_without_quoting_its_secret(args: Any, message: str) -> None:
    with pytest.raises(AdminTokenError, match=message) as caught:
        AdminToken(*args)
    assert str(args[1]) not in str(caught.value) or args[1] == ""


def test_a_token_from_the_environment_names_the_variable_when_it_is_missing() -> None:
    assert AdminToken.from_env("ops", "TOK", environ={"TOK": SECRET}).matches(SECRET.encode())
    with pytest.raises(AdminTokenError, match=r"\$TOK is not set"):
        AdminToken.from_env("ops", "TOK", environ={})
    with pytest.raises(AdminTokenError, match=r"at least 16.*\$TOK") as caught:
        AdminToken.from_env("ops", "TOK", environ={"TOK": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value)


def test_a_token_from_a_file_is_stripped_and_a_bad_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    token = AdminToken.from_file("ops", path, scope="write")
    assert token.matches(SECRET.encode()) and token.scope == "write"
    with pytest.raises(AdminTokenError, match=r"cannot read .*missing"):
        AdminToken.from_file("ops", tmp_path / "missing")
    path.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(AdminTokenError, match="not UTF-8"):
        AdminToken.from_file("ops", path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": ""}, "host"),
        ({"port": 70000}, "0..65535"),
        ({"port": "8081"}, "port must be an int"),
        ({"port": True}, "port must be an int"),
        ({"tokens": AdminToken("a", SECRET)}, "sequence of AdminToken"),
        ({"tokens": ["secret"]}, "is not an AdminToken"),
        (
            {"tokens": [AdminToken("a", SECRET), AdminToken("a", SECRET + "x")]},
            "two tokens are named",
        ),
        ({"tokens": [AdminToken("a", SECRET), AdminToken("b", SECRET)]}, "same secret"),
        ({"writable": "rate_limiting.**"}, "sequence of globs"),
        ({"writable": ["a..b"]}, "writable"),
        ({"prefix": "admin"}, "start with '/'"),
        ({"prefix": "/admin/"}, "plain path"),
        ({"public": ["config"]}, "cannot be public"),
        ({"max_body": 0}, "max_body"),
        ({"request_timeout": -1}, "request_timeout"),
        ({"heartbeat": 0}, "heartbeat"),
        ({"events_kept": 1.5}, "events_kept"),
    ],
)
def test_a_bad_admin_option_is_refused_naming_it(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdminSpec(**options)


def test_the_defaults_listen_on_loopback_with_nothing_writable() -> None:
    spec = AdminSpec()
    assert (spec.host, spec.port, spec.writable, spec.public) == (
        "127.0.0.1",
        8081,
        (),
        ("health",),
    )
    assert spec.max_body == 1024 * 1024


def test_config_spec_takes_only_an_admin_spec() -> None:
    with pytest.raises(TypeError, match="AdminSpec"):
        ConfigSpec(admin={"port": 8081})  # type: ignore[arg-type]


def test_naming_an_admin_spec_does_not_import_aiohttp() -> None:
    code = (
        "import sys, otpylib_config\n"
        "from otpylib_config.admin import AdminSpec\n"
        "otpylib_config.ConfigSpec(admin=AdminSpec())\n"
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
