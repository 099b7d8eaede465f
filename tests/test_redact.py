"""Specification of otpylib_config.redact: secrets never leave the server as text (README.md, API
and Sources; the secret globs' matching in docs/matching.md)."""

from __future__ import annotations

from typing import Any

import pytest

from otpylib_config import Config, DefaultsSource, telemetry
from otpylib_config.redact import (
    DEFAULT_SECRET_PATTERNS,
    REDACTED,
    URL_PASSWORD_MASK,
    Redactor,
    mask_url_passwords,
    words,
)
from otpylib_config.values import Section, freeze

from .conftest import StartTree


def tree(data: dict[str, Any]) -> Section:
    frozen = freeze(data)
    assert isinstance(frozen, Section)
    return frozen


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


def test_the_default_is_the_word_list() -> None:
    assert DEFAULT_SECRET_PATTERNS == (
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "key",
        "apikey",
        "credentials",
        "private_key",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("access_token_expire_minutes", ("access", "token", "expire", "minutes")),
        ("clientSecret", ("client", "secret")),
        ("APIKey", ("api", "key")),
        ("API-KEY", ("api", "key")),
        ("SecretAccessKey", ("secret", "access", "key")),
        ("oauth2Token", ("oauth", "2", "token")),
        ("password2", ("password",)),
        ("api_key_1", ("api", "key")),
        ("über_key", ("über", "key")),
        ("42", ()),
    ],
)
def test_a_name_splits_at_separators_case_changes_and_digits(name, expected) -> None:
    assert words(name) == expected


@pytest.mark.parametrize(
    "path",
    [
        "database.password",
        "password",
        "db_password",
        "db.passwd",
        "ftp.pwd",
        "security.secret_key",
        "auth.jwt_secret",
        "oauth.clientSecret",
        "github.token",
        "auth.token",
        "auth.access_token",
        "stripe.api_key",
        "stripe.apiKey",
        "stripe.ApiKey",
        "stripe.apikey",
        "stripe.API_KEY",
        "stripe.API-KEY",
        "stripe.APIKEY",
        "tls.private_key",
        "tls.privateKey",
        "DATABASE.PASSWORD",
        "Auth.JWT_Secret",
        "aws.SecretAccessKey",
        "aws.credentials",
        "db.password2",
        "keys.api_key_1",
        "github.oauth2Token",
    ],
)
def test_a_name_ending_in_a_secret_word_is_secret(redactor, path) -> None:
    assert redactor.is_secret(path)
    assert redactor.value(path, "hunter2") == REDACTED


@pytest.mark.parametrize(
    "path",
    [
        "auth.access_token_expire_minutes",
        "auth.token_ttl_s",
        "redis.key_prefix",
        "tls.key_file",
        "aws.credentials_file",
        "nlp.tokenizer",
        "input.keyboard",
        "zoo.monkey",
        "llm.max_tokens",
        "json.sort_keys",
        "db.password_hash_rounds",
        "database.url",
        "server.port",
        "debug",
        "pool_size",
        "rate_limits.api",
        "pass",
        "crypto.sha256",
    ],
)
def test_a_name_that_only_holds_a_secret_word_is_shown(redactor, path) -> None:
    assert not redactor.is_secret(path)
    assert redactor.value(path, "fine") == "fine"


@pytest.mark.parametrize("path", ["credentials.user", "a.b.token.c", "db.apiKey.rotation_days"])
def test_below_a_secret_section_every_path_is_secret(redactor, path) -> None:
    # Telemetry reports changes leaf by leaf: a leaf of a secret section must stay masked.
    assert redactor.is_secret(path)


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
    credentials = tree({"user": "app", "pass": "hunter2"})
    assert redactor.value("credentials", credentials) == REDACTED
    assert redactor.value("aws", tree({"credentials": credentials})) == {"credentials": REDACTED}


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
    assert redactor.is_secret("rsa_private")  # a word pattern: names ending in it
    assert not redactor.is_secret("db.password")
    assert redactor.value("tls.privatekey", "x") == "x"


def test_glob_patterns_keep_their_old_meaning() -> None:
    old_default = Redactor(["*password*", "*secret*", "*token*", "*key*"])
    for path in ("auth.access_token_expire_minutes", "redis.key_prefix", "tls.key_file"):
        assert old_default.is_secret(path)
    assert old_default.is_secret("SECRETS.db.host")  # compared in lower case, any segment
    assert not old_default.is_secret("database.url")
    assert Redactor(["db_?ass"]).is_secret("db_pass")
    assert Redactor(["[pP]in"]).is_secret("card.PIN")


def test_a_glob_is_matched_against_one_segment_so_a_dot_in_it_never_matches() -> None:
    redactor = Redactor(["db.*", "*_pem"])
    assert not redactor.is_secret("db.password") and not redactor.is_secret("db")
    assert redactor.is_secret("tls.server_pem.path")  # one segment matches: all below it


def test_a_lone_closing_bracket_makes_no_glob() -> None:
    redactor = Redactor(["pin]"])  # a word pattern: its word is "pin"
    assert redactor.is_secret("card.user_pin") and not redactor.is_secret("card.pin]x")


def test_the_default_can_be_extended_with_words_and_globs() -> None:
    redactor = Redactor([*DEFAULT_SECRET_PATTERNS, "dsn", "*cert*"])
    assert redactor.is_secret("sentry.dsn") and redactor.is_secret("sentry.SentryDSN")
    assert redactor.is_secret("tls.client_cert_pem") and redactor.is_secret("db.password")
    assert not redactor.is_secret("sentry.dsn_timeout")


def test_a_word_pattern_is_split_like_a_name() -> None:
    redactor = Redactor(["signingKey"])
    assert redactor.is_secret("jwt.signing_key") and redactor.is_secret("jwt.SIGNING-KEY")
    assert not redactor.is_secret("api_key")
    assert not Redactor(["apikey"]).is_secret("api_key")  # one word: apikey, APIKEY only
    assert Redactor(["apikey"]).is_secret("stripe_APIKEY")


@pytest.mark.parametrize("pattern", ["", "_", "--", "42"])
def test_a_pattern_without_a_word_is_refused_since_it_would_hide_everything(pattern) -> None:
    with pytest.raises(ValueError, match="no word"):
        Redactor([pattern])


def test_patterns_given_as_one_string_are_refused() -> None:
    with pytest.raises(TypeError):
        Redactor("password")


def test_no_patterns_means_nothing_is_secret() -> None:
    assert Redactor([]).value("db.password", "hunter2") == "hunter2"


def test_repr_shows_the_patterns() -> None:
    assert "*dsn*" in repr(Redactor(["*DSN*"]))


def test_is_secret_is_cached_per_path() -> None:
    redactor = Redactor()
    for _ in range(3):
        redactor.is_secret("database.password")
    assert redactor._matches.cache_info().hits == 2


# -- URL passwords: masked in every string shown, at any path --------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:pw@db/app", "postgresql://app:****@db/app"),
        ("redis://:pw@cache:6379/0", "redis://:****@cache:6379/0"),  # empty user
        ("pg://u:p@ss:w@rd@db/app", "pg://u:****@db/app"),  # the last @ before the path
        ("pg://u:p%40ss%2Fw%3Ard@db/app", "pg://u:****@db/app"),  # percent-encoded
        ("pg://u:p#ss?w!$&'()*+,;=@db/app", "pg://u:****@db/app"),  # raw # and ? too
        ("pg://u:pw@[::1]:5432/app", "pg://u:****@[::1]:5432/app"),
        ("amqp://u:pw@mq", "amqp://u:****@mq"),  # no path
        ("jdbc:mysql://u:pw@db:3306/app?ssl=true", "jdbc:mysql://u:****@db:3306/app?ssl=true"),
        (
            "primary pg://a:x1@h1/d, replica pg://b:x2@h2/d",
            "primary pg://a:****@h1/d, replica pg://b:****@h2/d",
        ),
        (
            "https://u:pw@proxy/?next=http://v:pw2@inner",
            "https://u:****@proxy/?next=http://v:****@inner",
        ),
    ],
)
def test_the_password_of_a_url_is_masked(text, shown) -> None:
    assert mask_url_passwords(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db/app",  # a user, no password
        "postgresql://db:5432/app",  # a port, not a password
        "pg://u:@db/app",  # an empty password: nothing to hide
        "https://host:8080/hook?notify=ops@example.com",  # an @ in the query
        "https://example.com/users/@alice",
        "see http://example.com: mail me at a:b@c instead",  # prose around a URL
        "the scheme:// part comes first",
        "no url at all, just user:pw@host",
        "",
    ],
)
def test_strings_without_a_url_password_are_left_alone(text) -> None:
    assert mask_url_passwords(text) == text


def test_the_mask_is_a_fixed_marker_that_tells_nothing_of_the_length() -> None:
    assert URL_PASSWORD_MASK == "****"
    assert mask_url_passwords("pg://u:a-very-long-password@db") == "pg://u:****@db"


def test_a_string_without_a_scheme_separator_is_returned_as_is() -> None:
    text = "x" * 1000 + "@"  # the cheap path: a substring test, no regular expression
    assert mask_url_passwords(text) is text


def test_value_masks_url_passwords_at_any_path_and_below(redactor) -> None:
    url = "postgresql://app:pw@db/app"
    assert redactor.value("database.url", url) == "postgresql://app:****@db/app"
    assert redactor.value("database", tree({"url": url, "pool": 5})) == {
        "url": "postgresql://app:****@db/app",
        "pool": 5,
    }
    assert redactor.value("replicas", freeze([url])) == ("postgresql://app:****@db/app",)
    assert redactor.value("database.password", url) == REDACTED  # a secret: all of it


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
            "credentials": {"db": {"dsn": "pg://user:pw0rd@db"}},
            "api": {"token": ["tok-aaaa", "tok-bbbb"], "pin_key": 987654},
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


def test_scrub_masks_url_passwords_in_free_text(redactor) -> None:
    config = tree({"db": {"url": "postgresql://app:pw@db/app"}})
    text = "cannot connect to 'postgresql://app:pw@db/app': timeout; see http://docs/x"
    assert redactor.scrub(text, config) == (
        "cannot connect to 'postgresql://app:****@db/app': timeout; see http://docs/x"
    )
    assert redactor.scrub("proxy http://u:s3@px:3128 refused", tree({})) == (
        "proxy http://u:****@px:3128 refused"
    )


def test_scrub_replaces_a_secret_url_whole_before_masking_urls(redactor) -> None:
    config = tree({"db": {"password": "pg://user:pw0rd@db"}})
    assert redactor.scrub("bad pg://user:pw0rd@db", config) == f"bad {REDACTED}"


# -- end to end: what a running tree shows ----------------------------------------------------

URL = "postgresql://app:pw@db/app"
MASKED = "postgresql://app:****@db/app"


async def test_a_running_tree_masks_url_passwords_and_shows_names_that_are_not_secret(
    start_tree: StartTree,
) -> None:
    await start_tree(
        sources=[
            DefaultsSource(
                {
                    "database": {"url": URL, "password": "hunter2"},
                    "auth": {"access_token_expire_minutes": 30, "jwt_secret": "s3cret-jwt"},
                    "redis": {"key_prefix": "app:", "url": "redis://cache"},
                    "tls": {"key_file": "/etc/tls/app.key"},
                }
            )
        ]
    )
    assert Config.get_nowait("database.url") == URL  # the snapshot is never redacted
    assert await Config.dump() == {
        "database": {"url": MASKED, "password": REDACTED},
        "auth": {"access_token_expire_minutes": 30, "jwt_secret": REDACTED},
        "redis": {"key_prefix": "app:", "url": "redis://cache"},
        "tls": {"key_file": "/etc/tls/app.key"},
    }
    explained = str(await Config.explain("database.url"))
    assert MASKED in explained and "pw@" not in explained
    with telemetry.capture_events(telemetry.PUT, telemetry.CHANGED) as events:
        await Config.put("database.url", "postgresql://app:new-pw@db2/app")
    (put,) = [e.metadata for e in events if e.name == telemetry.PUT]
    (changed,) = [e.metadata for e in events if e.name == telemetry.CHANGED]
    assert put["value"] == changed["new_value"] == "postgresql://app:****@db2/app"
    assert changed["old_value"] == MASKED
    assert "new-pw" not in repr(events)
    assert await Config.get("database.url") == "postgresql://app:new-pw@db2/app"
