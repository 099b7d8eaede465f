"""Specification of otpylib_config.redact: secrets never leave the server as text (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import pytest

from otpylib_config.redact import DEFAULT_SECRET_PATTERNS, REDACTED, Redactor
from otpylib_config.values import Section, freeze


def tree(data: dict[str, Any]) -> Section:
    frozen = freeze(data)
    assert isinstance(frozen, Section)
    return frozen


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


def test_default_patterns_are_password_secret_token_key() -> None:
    assert DEFAULT_SECRET_PATTERNS == ("*password*", "*secret*", "*token*", "*key*")


@pytest.mark.parametrize(
    "path",
    [
        "database.password",
        "password",
        "db.admin_password_hash",
        "security.secret_key",
        "auth.jwt_secret",
        "github.token",
        "api.access_token_ttl",
        "stripe.api_key",
        "keys.primary",
        "DATABASE.PASSWORD",
        "Auth.JWT_Secret",
        "aws.SecretAccessKey",
        "secrets.db.host",
        "a.b.token.c",
    ],
)
def test_a_path_is_secret_when_any_segment_matches_case_insensitively(redactor, path) -> None:
    assert redactor.is_secret(path)
    assert redactor.value(path, "hunter2") == REDACTED


@pytest.mark.parametrize(
    "path", ["database.url", "server.port", "debug", "pool_size", "rate_limits.api", "pass"]
)
def test_other_paths_are_not_secret(redactor, path) -> None:
    assert not redactor.is_secret(path)


@pytest.mark.parametrize("value", ["pg://db", 5432, 1.5, True, False, ("a", "b"), ""])
def test_non_secret_values_are_returned_untouched(redactor, value) -> None:
    assert redactor.value("database.url", value) == value


@pytest.mark.parametrize("value", ["hunter2", "", 0, False, 1.5, ("a",), freeze({"x": 1})])
def test_every_kind_of_secret_value_is_redacted(redactor, value) -> None:
    assert redactor.value("db.password", value) == REDACTED


def test_none_stays_none_even_at_a_secret_path(redactor) -> None:
    assert redactor.value("db.password", None) is None
    assert redactor.value("db.url", None) is None


def test_a_section_is_redacted_leaf_by_leaf(redactor) -> None:
    database = tree({"url": "pg://db", "password": "hunter2", "pool": {"size": 5, "token": "t"}})
    assert redactor.value("database", database) == {
        "url": "pg://db",
        "password": REDACTED,
        "pool": {"size": 5, "token": REDACTED},
    }


def test_redacting_a_section_does_not_change_the_section(redactor) -> None:
    database = tree({"password": "hunter2"})
    redactor.value("database", database)
    assert database == {"password": "hunter2"}


def test_a_secret_section_is_redacted_as_a_whole(redactor) -> None:
    assert redactor.value("secrets", tree({"db": "x", "api": "y"})) == REDACTED


def test_none_inside_a_section_stays_none(redactor) -> None:
    assert redactor.value("db", tree({"password": None, "url": None})) == {
        "password": None,
        "url": None,
    }


def test_secrets_inside_lists_of_sections_are_redacted(redactor) -> None:
    users = freeze([{"name": "alice", "password": "hunter2"}])
    redacted = redactor.value("users", users)
    assert "hunter2" not in repr(redacted)
    assert redacted[0]["name"] == "alice"


def test_custom_patterns_replace_the_defaults() -> None:
    redactor = Redactor(["*DSN*", "private"])
    assert redactor.is_secret("sentry.dsn")
    assert redactor.is_secret("tls.private.pem")
    assert not redactor.is_secret("db.password")
    assert redactor.value("tls.privatekey", "x") == "x"


def test_no_patterns_means_nothing_is_secret() -> None:
    assert Redactor([]).value("db.password", "hunter2") == "hunter2"


def test_repr_shows_the_patterns() -> None:
    assert "*dsn*" in repr(Redactor(["*DSN*"]))


# -- scrub: secrets out of free text (validator messages) -----------------------------------

SECRET = "hunter2-SECRET-xyz"


def test_scrub_replaces_a_secret_value_wherever_it_appears(redactor) -> None:
    config = tree({"db": {"password": SECRET, "url": "pg://db"}})
    text = f"Value error, {SECRET!r} is weak; so is {SECRET}"
    assert redactor.scrub(text, config) == f"Value error, '{REDACTED}' is weak; so is {REDACTED}"


def test_scrub_leaves_values_at_other_paths_alone(redactor) -> None:
    config = tree({"db": {"password": SECRET, "url": "pg://db"}})
    assert redactor.scrub("cannot reach pg://db", config) == "cannot reach pg://db"


def test_scrub_finds_leaves_of_secret_sources(redactor) -> None:
    config = tree({"api": {"credential": SECRET}})
    assert redactor.scrub(SECRET, config) == SECRET  # no pattern matches api.credential
    redactor.replace_leaves(frozenset({"api.credential"}))
    assert redactor.scrub(f"bad {SECRET}", config) == f"bad {REDACTED}"


def test_scrub_covers_secret_sections_lists_and_numbers(redactor) -> None:
    config = tree(
        {
            "secrets": {"db": {"dsn": "pg://user:pw0rd@db"}},
            "api": {"tokens": ["tok-aaaa", "tok-bbbb"], "key_id": 987654},
            "users": [{"name": "alice", "password": "alice-pass"}],
        }
    )
    text = "pg://user:pw0rd@db tok-aaaa tok-bbbb 987654 alice-pass alice"
    assert redactor.scrub(text, config) == " ".join([REDACTED] * 5 + ["alice"])


def test_scrub_replaces_the_longest_secret_first(redactor) -> None:
    config = tree({"a": {"password": "abcd"}, "b": {"password": "abcd-efgh"}})
    assert redactor.scrub("abcd-efgh and abcd", config) == f"{REDACTED} and {REDACTED}"


def test_scrub_finds_a_string_quoted_with_its_escapes(redactor) -> None:
    config = tree({"db": {"password": "line1\nline2"}})
    assert redactor.scrub("got 'line1\\nline2'", config) == f"got '{REDACTED}'"


@pytest.mark.parametrize("value", [True, False, None, "abc", 123, ""])
def test_scrub_skips_short_values_and_bools_so_messages_stay_readable(redactor, value) -> None:
    config = tree({"db": {"password": value}})
    text = "True False None abc 123 must be > 0"
    assert redactor.scrub(text, config) == text


def test_scrub_all_scrubs_each_text(redactor) -> None:
    config = tree({"db": {"password": SECRET}})
    assert redactor.scrub_all([SECRET, "ok", f"x{SECRET}"], config) == [
        REDACTED,
        "ok",
        f"x{REDACTED}",
    ]
