"""Bearer tokens and writable globs (otpylib_config/admin/auth.py)."""

from __future__ import annotations

import pytest

from otpylib_config.admin.auth import Writable, authenticate
from otpylib_config.admin.options import AdminToken

OPS = AdminToken("ops", "o" * 20, scope="write")
RO = AdminToken("ro", "r" * 20)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer " + "o" * 20, OPS),
        ("bearer " + "r" * 20, RO),
        ("Bearer   " + "r" * 20 + "  ", RO),
        ("Bearer " + "x" * 20, None),
        ("Basic " + "o" * 20, None),
        ("Bearer", None),
        ("", None),
        (None, None),
        ("Bearer \udcff" + "o" * 19, None),
    ],
)
def test_authenticate_finds_the_token_a_header_presents(
    header: str | None, expected: AdminToken | None
) -> None:
    assert authenticate([OPS, RO], header) is expected


@pytest.mark.parametrize(
    ("globs", "path", "allowed"),
    [
        (["rate_limiting.**"], ("rate_limiting",), True),
        (["rate_limiting.**"], ("rate_limiting", "per_ip"), True),
        (["rate_limiting.**"], ("logging", "level"), False),
        (["logging.level"], ("logging",), False),  # a section holds more than the glob allows
        (["logging.level"], ("logging", "level"), True),
        (["logging"], ("logging", "level", "x"), True),  # below a writable section
        (["*.level"], ("db", "level"), True),
        ([], ("anything",), False),
    ],
)
def test_a_path_is_writable_when_it_or_a_section_above_it_matches(
    globs: list[str], path: tuple[str, ...], allowed: bool
) -> None:
    assert Writable(globs).allows(path) is allowed
