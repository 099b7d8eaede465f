"""Specification of ConfigSpec: what one tree is made of, checked when it is written.

A spec is frozen and keyword-only; a mistake in it (a bad id, a non-source, two sources of
one name, a second runtime layer, a non-positive interval or timeout) raises when the spec
is constructed, with a message naming the field. The profile is ``profile``, else the
variable named ``profile_env`` in the tree's environment (the process over ``env_file``).
What a spec gives its sources reaches them through ``Source.configure`` (README.md, API,
Sources and Environment).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import otpylib_config
from otpylib_config import (
    DEFAULT_SECRET_PATTERNS,
    ConfigSpec,
    DefaultsSource,
    RuntimeSource,
    SourceError,
)
from otpylib_config.environment import EnvFileError
from otpylib_config.sources.base import DEFAULT_DEBOUNCE

from .conftest import FakeSource, StartTree

# -- defaults --------------------------------------------------------------------------------


def test_the_defaults_are_the_documented_ones() -> None:
    spec = ConfigSpec()
    assert (spec.id, spec.sources, spec.profile, spec.profile_env) == (
        "default",
        (),
        None,
        "CONFIG_PROFILE",
    )
    assert (spec.reload_interval, spec.write_timeout, spec.callback_timeout) == (30.0, 5.0, 30.0)
    assert (spec.max_restarts, spec.max_seconds, spec.stop_timeout) == (10, 5.0, 2.0)
    assert spec.watch_debounce == DEFAULT_DEBOUNCE == 0.05
    assert spec.secret_patterns == DEFAULT_SECRET_PATTERNS
    assert (spec.schema, dict(spec.validators)) == (None, {})
    assert (spec.env_file, spec.env_file_optional, spec.strict_env) == (None, False, False)


def test_a_spec_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ConfigSpec("myapp")  # type: ignore[misc]
    spec = ConfigSpec(id="myapp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "other"  # type: ignore[misc]


def test_sources_are_kept_as_a_tuple_in_their_order() -> None:
    a, b = FakeSource("a"), FakeSource("b")
    given = [a, b]
    spec = ConfigSpec(sources=given)
    given.append(FakeSource("c"))  # the caller's list is not the spec's
    assert spec.sources == (a, b)


# -- the runtime layer -----------------------------------------------------------------------


def test_without_a_runtime_source_one_is_added() -> None:
    spec = ConfigSpec(sources=[DefaultsSource({})])
    assert isinstance(spec.runtime, RuntimeSource)
    assert spec.runtime.path is None
    assert [s.name for s in spec.sources] == ["defaults"]


def test_a_listed_runtime_source_becomes_the_runtime_layer_wherever_it_is(
    tmp_path: Path,
) -> None:
    runtime = RuntimeSource(tmp_path / "overrides.json")
    spec = ConfigSpec(sources=[runtime, DefaultsSource({})])
    assert spec.runtime is runtime
    assert [s.name for s in spec.sources] == ["defaults"]  # not loaded like the others


def test_two_runtime_sources_are_refused() -> None:
    with pytest.raises(ValueError, match="more than one RuntimeSource"):
        ConfigSpec(sources=[RuntimeSource(), RuntimeSource()])


# -- validation of the fields -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "my.app", 7, None])
def test_the_id_must_be_a_non_empty_str_without_a_dot(bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"ConfigSpec.id must be a non-empty str without '\.'"
    ) as info:
        ConfigSpec(id=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_something_that_is_not_a_source_is_refused_by_its_repr() -> None:
    with pytest.raises(TypeError, match=r"ConfigSpec.sources: \{'a': 1\} is not a Source"):
        ConfigSpec(sources=[{"a": 1}])  # type: ignore[list-item]


def test_duplicate_source_names_are_refused_all_at_once() -> None:
    sources = [FakeSource("b"), FakeSource("a"), FakeSource("b"), FakeSource("a"), FakeSource()]
    with pytest.raises(ValueError, match=r"duplicate source names \['a', 'b'\]"):
        ConfigSpec(sources=sources)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reload_interval", 0, "reload_interval must be positive or None"),
        ("reload_interval", -1.0, "reload_interval must be positive or None"),
        ("write_timeout", 0, "write_timeout must be positive"),
        ("stop_timeout", -0.5, "stop_timeout must be positive"),
    ],
)
def test_intervals_and_timeouts_must_be_positive(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"ConfigSpec.{message}"):
        ConfigSpec(**{field: value})  # type: ignore[arg-type]


def test_no_timer_is_a_reload_interval_of_none() -> None:
    assert ConfigSpec(reload_interval=None).reload_interval is None


# -- the profile -----------------------------------------------------------------------------


def test_the_spec_profile_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    assert ConfigSpec(profile="dev").resolved_profile() == "dev"
    assert ConfigSpec(profile="dev").resolved_profile({"CONFIG_PROFILE": "prod"}) == "dev"


def test_the_profile_is_read_from_the_variable_named_by_profile_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    monkeypatch.setenv("APP_ENV", "staging")
    assert ConfigSpec().resolved_profile() == "prod"
    assert ConfigSpec(profile_env="APP_ENV").resolved_profile() == "staging"
    assert ConfigSpec().resolved_profile({"CONFIG_PROFILE": "qa"}) == "qa"  # given variables


def test_no_profile_when_the_variable_is_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    assert ConfigSpec().resolved_profile() is None
    assert ConfigSpec().resolved_profile({"CONFIG_PROFILE": ""}) is None


def test_profile_env_none_reads_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    assert ConfigSpec(profile_env=None).resolved_profile() is None
    assert ConfigSpec(profile_env=None, profile="dev").resolved_profile() == "dev"


def test_the_env_file_can_pick_the_profile_and_the_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    (tmp_path / ".env").write_text("CONFIG_PROFILE=dev\n")
    spec = ConfigSpec(env_file=tmp_path / ".env")
    assert spec.resolved_profile() == "dev"
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    assert spec.resolved_profile() == "prod"


def test_a_missing_env_file_is_an_error_naming_it_unless_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    missing = tmp_path / ".env"
    with pytest.raises(EnvFileError, match="env file not found") as info:
        ConfigSpec(env_file=missing).resolved_profile()
    assert str(missing) in str(info.value)
    assert ConfigSpec(env_file=missing, env_file_optional=True).resolved_profile() is None


async def test_a_tree_whose_profile_cannot_be_read_does_not_start_and_says_why(
    otp_runtime: object, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CONFIG_PROFILE=dev\nnot a statement\n")
    spec = ConfigSpec(sources=[DefaultsSource({})], env_file=tmp_path / ".env")
    with pytest.raises(SourceError, match="cannot read CONFIG_PROFILE") as info:
        await otpylib_config.start(spec)
    assert f"{tmp_path / '.env'}: line 2" in str(info.value)


# -- what the spec tells its sources --------------------------------------------------------


async def test_each_source_is_told_the_trees_settings_before_its_first_load(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APP_ENV", raising=False)
    (tmp_path / ".env").write_text("APP_ENV=dev\nFROM_FILE=1\n")
    source = FakeSource("fake", {"a": 1})

    await start_tree(
        sources=[source],
        profile_env="APP_ENV",
        env_file=tmp_path / ".env",
        watch_debounce=0.2,
        strict_env=True,
    )

    context = source.context
    assert context is not None
    assert (context.profile, context.profile_env, context.watch_debounce) == ("dev", "APP_ENV", 0.2)
    assert context.strict_env is True
    assert context.shape is None  # no pydantic schema
    assert context.environment.variables()["FROM_FILE"] == "1"
    assert source.loads == 1 and source.accepted_layers == [{"a": 1}]


async def test_the_spec_profile_is_what_sources_are_told(start_tree: StartTree) -> None:
    source = FakeSource()
    await start_tree(sources=[source], profile="qa")
    assert source.context is not None and source.context.profile == "qa"
