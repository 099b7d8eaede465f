"""The ``otpylib-config`` command, run as users run it: a subprocess.

Offline tests write real TOML/JSON/YAML files and a spec module to ``tmp_path`` (on
``PYTHONPATH``, or the working directory) and pass variables through the subprocess's
environment. Online tests start a real tree with the admin API on the test's own loop and
run the CLI against it with ``asyncio.create_subprocess_exec``, so the tree keeps serving
while the CLI waits. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from otpylib_config import Config, ConfigTree, DefaultsSource
from otpylib_config.admin import AdminSpec, AdminToken
from otpylib_config.cli import main

from .conftest import StartTree

TIMEOUT = 60.0
"""Bounds one CLI run; none comes near it unless something hangs."""
WRITE_TOKEN = "x" * 24
READ_TOKEN = "y" * 24
ANSI = "\x1b["

CONFIG_TOML = """\
[database]
url = "postgresql://app:hunter2-url@db.internal/app"
pool_size = 5
password = "file-secret-value"

[log]
level = "info"
"""

PROD_TOML = """\
[database]
pool_size = 20
password = "prod-secret-value"

[replicas]
count = 3
"""


# -- running the CLI -----------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def clean_env(extra: dict[str, str] | None = None, **more: str) -> dict[str, str]:
    """The test process's environment without anything that would choose for the CLI."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTPYLIB_CONFIG_", "APP_")) and k not in ("NO_COLOR", "CONFIG_PROFILE")
    }
    env.update(extra or {})
    env.update(more)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """The CLI as a subprocess, synchronously (offline tests: no tree to keep serving)."""
    done = subprocess.run(
        [sys.executable, "-m", "otpylib_config", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


async def arun_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI as a subprocess without blocking the loop the tree runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otpylib_config",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else clean_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Follow:
    """A long-running CLI (``watch``) whose output lines are read as they come."""

    proc: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or (
                self.proc.returncode is not None and not predicate()
            ):
                await asyncio.sleep(0.1)  # let the readers drain what is left
                if predicate():
                    return
                pytest.fail(f"never saw {what}; stdout={self.out!r} stderr={self.err!r}")
            await asyncio.sleep(0.02)

    async def finished(self, timeout: float = 20) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self.readers), timeout)
        return code


@contextlib.asynccontextmanager
async def follow(*args: str, env: dict[str, str]) -> AsyncIterator[Follow]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otpylib_config",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    running = Follow(proc)

    async def read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))

    running.readers = [
        asyncio.create_task(read(proc.stdout, running.out)),
        asyncio.create_task(read(proc.stderr, running.err)),
    ]
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for reader in running.readers:
            reader.cancel()
        await asyncio.gather(*running.readers, return_exceptions=True)


# -- offline fixtures ------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A service layout in ``tmp_path``: config.toml, config.prod.toml, a JSON and a YAML
    file, and ``cliapp.py`` with several specs (plain, factory, with a schema)."""
    (tmp_path / "config.toml").write_text(CONFIG_TOML)
    (tmp_path / "config.prod.toml").write_text(PROD_TOML)
    (tmp_path / "extra.json").write_text(json.dumps({"feature": {"new_ui": True}}))
    (tmp_path / "extra.yaml").write_text("feature:\n  beta: [1, 2]\n")
    (tmp_path / "bad.toml").write_text("[server]\nport = 'eighty'\nworkers = 4\n")
    (tmp_path / "cliapp.py").write_text(
        textwrap.dedent(
            f"""
            import pydantic
            from otpylib_config import ConfigSpec, DefaultsSource, EnvironmentSource, FileSource

            ROOT = {str(tmp_path)!r}
            spec = ConfigSpec(sources=[
                DefaultsSource({{"log": {{"level": "warning"}}, "debug": False}}),
                FileSource(ROOT + "/config.toml"),
                FileSource(ROOT + "/config.{{profile}}.toml", optional=True),
                EnvironmentSource("APP_"),
            ])
            other = ConfigSpec(sources=[FileSource(ROOT + "/extra.json")])

            def make():
                return spec

            class Server(pydantic.BaseModel):
                port: int
                workers: int

            class Settings(pydantic.BaseModel):
                server: Server

            strict = ConfigSpec(
                schema=Settings,
                sources=[FileSource(ROOT + "/bad.toml"), EnvironmentSource("APP_")],
            )
            number = 42

            def broken():
                raise RuntimeError("cannot build the spec")
            """
        )
    )
    return tmp_path


@pytest.fixture
def env(app: Path) -> dict[str, str]:
    """The subprocess environment with the spec module on PYTHONPATH."""
    return clean_env(PYTHONPATH=str(app))


# -- --help, the entry point, main() ---------------------------------------------------------


def test_help_describes_commands_examples_and_exit_codes(env: dict[str, str]) -> None:
    result = run_cli("--help", env=env)
    assert result.code == 0
    for word in ("show", "get", "explain", "validate", "diff", "put", "delete", "reload"):
        assert word in result.out
    assert "examples:" in result.out and "exit codes:" in result.out
    assert "OTPYLIB_CONFIG_URL" in result.out and "NO_COLOR" in result.out


def test_command_help_lists_the_options_of_its_modes(env: dict[str, str]) -> None:
    show = run_cli("show", "--help", env=env)
    assert show.code == 0
    assert "--spec" in show.out and "--url" in show.out and "--format" in show.out
    assert "exit codes:" in show.out and "examples:" in show.out
    validate = run_cli("validate", "--help", env=env)
    assert "--spec" in validate.out and "--url URL" not in validate.out
    put = run_cli("put", "--help", env=env)
    assert "--url" in put.out and "--spec MODULE" not in put.out and "'\"info\"'" in put.out


def test_the_console_script_entry_point_resolves_to_main() -> None:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="otpylib-config")
    assert entry.value == "otpylib_config.cli:main"
    assert entry.load() is main
    script = Path(sys.executable).parent / "otpylib-config"
    if script.exists():  # the editable install made it: it runs the same main
        done = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert done.returncode == 0 and "exit codes:" in done.stdout


def test_main_returns_exit_codes_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert main([]) == 2  # no command
    assert main(["get"]) == 2  # no PATH
    assert main(["nosuchcommand"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_the_registry_takes_command_groups(app: Path, env: dict[str, str]) -> None:
    """A group registered by its own module, as ``fleet`` is."""
    script = textwrap.dedent(
        """
        import sys
        from otpylib_config.cli import Command, main, register

        def status(args, out):
            out.line(f"demo status of {args.files[0][0]}")
            return 0

        register(Command("demo", "demos", "Demo commands.", children=(
            Command("status", "demo status", "Status of a demo.", offline=status),
        )))
        sys.exit(main(sys.argv[1:]))
        """
    )
    config = str(app / "config.toml")
    done = subprocess.run(
        [sys.executable, "-c", script, "demo", "status", "--file", config],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == f"demo status of {config}\n"
    usage = subprocess.run(
        [sys.executable, "-c", script, "demo", "status"],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert usage.returncode == 2 and "otpylib-config demo status: error" in usage.stderr


def test_usage_errors_exit_2_with_a_pointer_to_help(env: dict[str, str]) -> None:
    result = run_cli("get", "a..b", "--spec", "cliapp:spec", env=env)
    assert result.code == 2
    assert "invalid path" in result.err and "otpylib-config get --help" in result.err
    assert run_cli("watch", "--count", "0", "--url", "http://h", env=env).code == 2


# -- mode choice -----------------------------------------------------------------------------


def test_neither_url_nor_sources_is_a_usage_error_that_explains(env: dict[str, str]) -> None:
    result = run_cli("show", env=env)
    assert result.code == 2
    assert "--spec" in result.err and "--url" in result.err and "OTPYLIB_CONFIG_URL" in result.err


def test_both_url_and_sources_is_a_usage_error(app: Path, env: dict[str, str]) -> None:
    flag = run_cli(
        "get", "log.level", "--url", "http://127.0.0.1:1", "--spec", "cliapp:spec", env=env
    )
    assert flag.code == 2 and "drop --url" in flag.err
    from_env = run_cli(
        "get", "log.level", "--file", str(app / "config.toml"),
        env={**env, "OTPYLIB_CONFIG_URL": "http://127.0.0.1:1"},
    )  # fmt: skip
    assert from_env.code == 2 and "unset $OTPYLIB_CONFIG_URL" in from_env.err


def test_offline_only_commands_ignore_the_url_and_online_ones_need_it(
    env: dict[str, str],
) -> None:
    with_url = {**env, "OTPYLIB_CONFIG_URL": "http://127.0.0.1:1"}
    assert run_cli("validate", "--spec", "cliapp:spec", env=with_url).code == 0
    result = run_cli("validate", env=with_url)
    assert result.code == 2 and "--spec" in result.err
    put = run_cli("put", "a", "1", env=env)
    assert put.code == 2 and "--url" in put.err


# -- --spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("cliapp", "not of the form package.module:attribute"),
        ("cli app:spec", "not of the form"),
        ("nosuchmodule:spec", "cannot import module 'nosuchmodule'"),
        ("cliapp:nothing", "'cliapp' has no attribute 'nothing'"),
        ("cliapp:spec.nothing", "'cliapp.spec' has no attribute 'nothing'"),
        ("cliapp:number", "is a int, not a ConfigSpec"),
        ("cliapp:broken", "calling it failed: RuntimeError: cannot build the spec"),
    ],
)
def test_a_bad_spec_reference_names_what_is_wrong(
    env: dict[str, str], reference: str, message: str
) -> None:
    result = run_cli("validate", "--spec", reference, env=env)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_the_spec_may_be_a_factory_and_is_found_from_the_current_directory(app: Path) -> None:
    result = run_cli("get", "log.level", "--spec", "cliapp:make", env=clean_env(), cwd=app)
    assert result.code == 0 and json.loads(result.out) == "info"


# -- show, get, explain ----------------------------------------------------------------------


def test_show_prints_the_merged_configuration_redacted(env: dict[str, str]) -> None:
    result = run_cli("show", "--spec", "cliapp:spec", env={**env, "APP_LOG__LEVEL": "debug"})
    assert result.code == 0
    shown = json.loads(result.out)
    assert shown["log"] == {"level": "debug"} and shown["debug"] is False
    assert shown["database"]["password"] == "**redacted**"
    assert shown["database"]["url"] == "postgresql://app:****@db.internal/app"
    assert "file-secret-value" not in result.both and "hunter2-url" not in result.both
    assert ANSI not in result.both  # not a terminal: no colour


def test_show_in_toml_and_yaml_and_a_subtree(app: Path, env: dict[str, str]) -> None:
    import tomllib

    import yaml

    toml = run_cli(
        "show", "--spec", "cliapp:spec", "--profile", "prod", "--format", "toml", env=env
    )
    assert toml.code == 0
    parsed = tomllib.loads(toml.out)
    assert parsed["database"]["pool_size"] == 20 and parsed["replicas"] == {"count": 3}
    assert parsed["database"]["password"] == "**redacted**"
    files = ["--file", str(app / "extra.json"), "--file", str(app / "extra.yaml")]
    subtree = run_cli("show", *files, "--path", "feature", "--format", "yaml", env=env)
    assert subtree.code == 0 and yaml.safe_load(subtree.out) == {"new_ui": True, "beta": [1, 2]}


def test_show_refuses_what_toml_cannot_hold(app: Path, env: dict[str, str]) -> None:
    leaf = run_cli(
        "show", "--spec", "cliapp:spec", "--path", "log.level", "--format", "toml", env=env
    )
    assert leaf.code == 2 and "must be a table" in leaf.err
    (app / "null.json").write_text('{"a": {"b": null}}')
    null = run_cli("show", "--file", str(app / "null.json"), "--format", "toml", env=env)
    assert null.code == 2 and "a.b is null" in null.err
    absent = run_cli("show", "--spec", "cliapp:spec", "--path", "nothing", env=env)
    assert absent.code == 4


def test_a_missing_optional_dependency_names_its_extra(app: Path, env: dict[str, str]) -> None:
    shadow = app / "shadow"
    shadow.mkdir()
    (shadow / "tomli_w.py").write_text("raise ImportError('simulated: not installed')\n")
    (shadow / "yaml.py").write_text("raise ImportError('simulated: not installed')\n")
    hidden = {**env, "PYTHONPATH": f"{shadow}{os.pathsep}{app}"}
    toml = run_cli("show", "--spec", "cliapp:spec", "--format", "toml", env=hidden)
    assert toml.code == 2 and "pip install 'otpylib-config[cli]'" in toml.err
    yaml = run_cli("show", "--spec", "cliapp:spec", "--format", "yaml", env=hidden)
    assert yaml.code == 2 and "pip install 'otpylib-config[yaml]'" in yaml.err


def test_files_layer_in_order_with_profiles_and_environment(app: Path, env: dict[str, str]) -> None:
    files = [
        "--file",
        str(app / "config.toml"),
        "--optional-file",
        str(app / "config.{profile}.toml"),
    ]
    dev = run_cli("get", "database.pool_size", *files, "--profile", "dev", env=env)
    assert dev.code == 0 and json.loads(dev.out) == 5  # config.dev.toml is missing: optional
    prod = run_cli("get", "database.pool_size", *files, "--profile", "prod", env=env)
    assert json.loads(prod.out) == 20
    from_env = run_cli(
        "get", "database.pool_size", *files, "--env-prefix", "APP_",
        env={**env, "APP_DATABASE__POOL_SIZE": "33", "CONFIG_PROFILE": "prod"},
    )  # fmt: skip
    assert json.loads(from_env.out) == 33
    required = run_cli("get", "log", "--file", str(app / "config.{profile}.toml"), env=env)
    assert required.code == 1  # a required {profile} file and no profile


def test_get_prints_json_redacted_and_exits_4_when_absent(env: dict[str, str]) -> None:
    value = run_cli("get", "database", "--spec", "cliapp:spec", env=env)
    assert value.code == 0
    assert json.loads(value.out)["password"] == "**redacted**"
    assert "file-secret-value" not in value.both
    secret = run_cli("get", "database.password", "--spec", "cliapp:spec", env=env)
    assert json.loads(secret.out) == "**redacted**"
    raw = run_cli("get", "log.level", "--raw", "--spec", "cliapp:spec", env=env)
    assert raw.out == "info\n"
    absent = run_cli("get", "database.nothing", "--spec", "cliapp:spec", env=env)
    assert absent.code == 4 and "no value at 'database.nothing'" in absent.err and not absent.out


def test_explain_names_the_winner_and_what_it_overrides(app: Path, env: dict[str, str]) -> None:
    variables = {**env, "APP_LOG__LEVEL": "debug"}
    text = run_cli("explain", "log.level", "--spec", "cliapp:spec", env=variables)
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[0] == 'log.level = "debug"'
    assert "from $APP_LOG__LEVEL [env:APP_]" in lines[1]
    assert "overrides" in lines[2] and "config.toml: log.level" in lines[2] and '"info"' in lines[2]
    assert "overrides defaults" in lines[3] and '"warning"' in lines[3]
    machine = run_cli("explain", "log.level", "--json", "--spec", "cliapp:spec", env=variables)
    data = json.loads(machine.out)
    assert data["value"] == "debug" and data["source"] == "env:APP_"
    assert [c["value"] for c in data["contributions"]] == ["debug", "info", "warning"]


def test_explain_redacts_secrets_and_exits_4_when_nothing_sets_it(env: dict[str, str]) -> None:
    secret = run_cli(
        "explain", "database.password", "--spec", "cliapp:spec", "--profile", "prod", env=env
    )
    assert secret.code == 0 and "**redacted**" in secret.out
    assert "prod-secret-value" not in secret.both and "file-secret-value" not in secret.both
    absent = run_cli("explain", "nothing.here", "--spec", "cliapp:spec", env=env)
    assert absent.code == 4 and "nothing.here: not set" in absent.out


# -- validate --------------------------------------------------------------------------------


def test_validate_prints_one_ok_line(env: dict[str, str]) -> None:
    result = run_cli("validate", "--spec", "cliapp:spec", env=env)
    assert result.code == 0
    assert result.out.count("\n") == 1 and result.out.startswith("OK: the configuration is valid")
    machine = run_cli("validate", "--json", "--spec", "cliapp:spec", env=env)
    assert json.loads(machine.out) == {"valid": True, "problems": []}


def test_validate_lists_every_problem_with_its_path_and_origin(env: dict[str, str]) -> None:
    result = run_cli(
        "validate", "--spec", "cliapp:strict", env={**env, "APP_SERVER__WORKERS": "many"}
    )
    assert result.code == 1
    assert "2 problems" in result.err
    port = next(line for line in result.err.splitlines() if "server.port" in line)
    workers = next(line for line in result.err.splitlines() if "server.workers" in line)
    assert "bad.toml: server.port" in port
    assert "$APP_SERVER__WORKERS" in workers
    machine = run_cli(
        "validate", "--json", "--spec", "cliapp:strict", env={**env, "APP_SERVER__WORKERS": "x"}
    )
    data = json.loads(machine.out)
    assert machine.code == 1 and data["valid"] is False
    assert sorted(p["path"] for p in data["problems"]) == ["server.port", "server.workers"]


def test_validate_reports_a_missing_file(app: Path, env: dict[str, str]) -> None:
    result = run_cli("validate", "--file", str(app / "missing.toml"), env=env)
    assert result.code == 1 and "missing.toml" in result.err and "Traceback" not in result.err
    assert "keeping its last good layer" not in result.err  # the library's log line: once is enough


# -- diff ------------------------------------------------------------------------------------


def test_diff_of_two_profiles_prints_added_removed_changed_redacted(env: dict[str, str]) -> None:
    result = run_cli(
        "diff", "--spec", "cliapp:spec", "--profile", "dev", "--against", "prod", env=env
    )
    assert result.code == 1
    lines = result.out.splitlines()
    assert (
        lines[0] == "--- cliapp:spec (profile dev)" and lines[1] == "+++ cliapp:spec (profile prod)"
    )
    assert '~ database.password: "**redacted**" -> "**redacted**"' in lines
    assert "~ database.pool_size: 5 -> 20" in lines
    assert "+ replicas.count: 3" in lines
    assert lines[-1] == "3 differences"
    assert "secret-value" not in result.both


def test_diff_of_equal_configurations_exits_0(app: Path, env: dict[str, str]) -> None:
    files = ["--file", str(app / "config.toml")]
    result = run_cli(
        "diff",
        *files,
        "--against-file",
        str(app / "config.toml"),
        "--profile",
        "a",
        "--against",
        "b",
        env=env,
    )
    assert result.code == 0 and result.out.splitlines()[-1] == "no differences"


def test_diff_of_two_specs_as_json(env: dict[str, str]) -> None:
    result = run_cli(
        "diff", "--spec", "cliapp:other", "--against-spec", "cliapp:spec", "--json", env=env
    )
    assert result.code == 1
    data = json.loads(result.out)
    assert data["equal"] is False
    assert data["removed"] == {"feature.new_ui": True}
    assert data["added"]["database.password"] == "**redacted**"
    assert data["added"]["log.level"] == "info" and data["changed"] == {}


def test_diff_needs_something_to_compare_against(env: dict[str, str]) -> None:
    nothing = run_cli("diff", "--spec", "cliapp:spec", env=env)
    assert nothing.code == 2 and "--against PROFILE" in nothing.err
    same = run_cli("diff", "--spec", "cliapp:spec", "--profile", "x", "--against", "x", env=env)
    assert same.code == 2


# -- colour ----------------------------------------------------------------------------------


def run_on_terminal(*args: str, env: dict[str, str]) -> str:
    """The CLI with stdout and stderr on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otpylib_config", *args],
            stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        os.close(follower)
        chunks = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the child is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=TIMEOUT)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)


def test_colour_only_on_a_terminal_without_no_color(env: dict[str, str]) -> None:
    args = ("diff", "--spec", "cliapp:spec", "--profile", "dev", "--against", "prod")
    assert ANSI in run_on_terminal(*args, env=env)
    assert ANSI not in run_on_terminal(*args, env={**env, "NO_COLOR": "1"})
    assert ANSI not in run_cli(*args, env=env).out


# -- online ----------------------------------------------------------------------------------


class Limits(pydantic.BaseModel):
    per_ip: int = 10
    burst: int = 5


class Database(pydantic.BaseModel):
    password: str


class Served(pydantic.BaseModel):
    rate_limiting: Limits
    database: Database


@pytest_asyncio.fixture
async def serve(start_tree: StartTree) -> AsyncIterator[Callable[..., Any]]:
    """``url = await serve(**admin_options)``: a tree with the admin API, its base URL."""

    async def start(**admin: Any) -> str:
        tokens = [AdminToken("ops", WRITE_TOKEN, scope="write"), AdminToken("ro", READ_TOKEN)]
        admin.setdefault("writable", ["rate_limiting.**"])
        tree: ConfigTree = await start_tree(
            id="cli",
            schema=Served,
            sources=[
                DefaultsSource(
                    {"rate_limiting": {"per_ip": 10}, "database": {"password": "db-secret-pw"}}
                ),
            ],
            admin=AdminSpec(port=0, tokens=tokens, **admin),
        )
        assert tree is not None
        url = (await Config.of("cli").status()).admin_url
        assert url is not None
        return url

    yield start


def online_env(url: str, token: str | None = WRITE_TOKEN) -> dict[str, str]:
    extra = {"OTPYLIB_CONFIG_URL": url}
    if token:
        extra["OTPYLIB_CONFIG_TOKEN"] = token
    return clean_env(extra)


def assert_no_token(*results: Result) -> None:
    for result in results:
        assert WRITE_TOKEN not in result.both and READ_TOKEN not in result.both


async def test_online_reads_are_redacted(serve: Callable[..., Any]) -> None:
    url = await serve()
    env = online_env(url, READ_TOKEN)
    value = await arun_cli("get", "rate_limiting.per_ip", env=env)
    assert value.code == 0 and json.loads(value.out) == 10
    secret = await arun_cli("get", "database.password", env=env)
    assert json.loads(secret.out) == "**redacted**"
    shown = await arun_cli("show", env=env)
    assert json.loads(shown.out)["database"] == {"password": "**redacted**"}
    subtree = await arun_cli("show", "--path", "rate_limiting", "--format", "yaml", env=env)
    assert subtree.code == 0 and "per_ip: 10" in subtree.out
    explained = await arun_cli("explain", "database.password", env=env)
    assert explained.code == 0 and "**redacted**" in explained.out and "defaults" in explained.out
    absent = await arun_cli("get", "rate_limiting.nothing", env=env)
    assert absent.code == 4 and absent.err
    unexplained = await arun_cli("explain", "rate_limiting.nothing", env=env)
    assert unexplained.code == 4
    results = [value, secret, shown, subtree, explained, absent]
    assert all("db-secret-pw" not in r.both for r in results)
    assert_no_token(*results)


async def test_online_url_flag_and_token_flag(serve: Callable[..., Any]) -> None:
    url = await serve()
    result = await arun_cli("get", "rate_limiting.per_ip", "--url", url, "--token", READ_TOKEN)
    assert result.code == 0 and json.loads(result.out) == 10
    assert_no_token(result)


async def test_put_delete_reload_status(serve: Callable[..., Any]) -> None:
    url = await serve()
    env = online_env(url)
    put = await arun_cli("put", "rate_limiting.per_ip", "200", env=env)
    assert put.code == 0 and "rate_limiting.per_ip: set (version" in put.out
    assert await Config.of("cli").get("rate_limiting.per_ip") == 200
    explained = await arun_cli("explain", "rate_limiting.per_ip", "--json", env=env)
    data = json.loads(explained.out)
    assert data["value"] == 200 and data["source"] == "runtime"
    delete = await arun_cli("delete", "rate_limiting.per_ip", env=env)
    assert delete.code == 0 and "override removed" in delete.out
    again = await arun_cli("delete", "rate_limiting.per_ip", env=env)
    assert again.code == 0 and "no override was set" in again.out
    assert await Config.of("cli").get("rate_limiting.per_ip") == 10
    reload = await arun_cli("reload", env=env)
    assert reload.code == 0 and reload.out.startswith("reloaded: version")
    status = await arun_cli("status", env=env)
    assert status.code == 0 and "cli: healthy" in status.out and "source defaults: ok" in status.out
    machine = await arun_cli("status", "--json", env=env)
    assert json.loads(machine.out)["healthy"] is True
    assert_no_token(put, explained, delete, again, reload, status, machine)


async def test_put_refuses_a_value_that_is_not_json(serve: Callable[..., Any]) -> None:
    url = await serve()
    result = await arun_cli("put", "rate_limiting.per_ip", "info", env=online_env(url))
    assert (
        result.code == 2 and "quote a string as JSON" in result.err and "'\"info\"'" in result.err
    )
    secret = await arun_cli("put", "database.password", "hunter2", env=online_env(url))
    assert secret.code == 2 and "hunter2" not in secret.both  # a secret's text is not echoed


async def test_put_that_fails_validation_lists_the_problems(serve: Callable[..., Any]) -> None:
    url = await serve()
    result = await arun_cli("put", "rate_limiting.per_ip", '"lots"', env=online_env(url))
    assert result.code == 1
    assert "422" in result.err and "rate_limiting.per_ip" in result.err
    assert await Config.of("cli").get("rate_limiting.per_ip") == 10


async def test_writes_the_token_may_not_make_exit_3(serve: Callable[..., Any]) -> None:
    url = await serve()
    read_only = await arun_cli("put", "rate_limiting.per_ip", "1", env=online_env(url, READ_TOKEN))
    assert read_only.code == 3 and "403" in read_only.err
    unwritable = await arun_cli("put", "database.password", '"x"', env=online_env(url))
    assert unwritable.code == 3 and "403" in unwritable.err
    assert_no_token(read_only, unwritable)


async def test_no_token_or_a_wrong_one_exits_3_without_printing_it(
    serve: Callable[..., Any],
) -> None:
    url = await serve()
    missing = await arun_cli("get", "rate_limiting", env=online_env(url, None))
    assert missing.code == 3 and "pass --token or set $OTPYLIB_CONFIG_TOKEN" in missing.err
    wrong_token = "z" * 30
    wrong = await arun_cli("get", "rate_limiting", env=online_env(url, wrong_token))
    assert wrong.code == 3 and "did not accept the token" in wrong.err
    assert wrong_token not in wrong.both
    assert_no_token(missing, wrong)


async def test_an_unreachable_or_silent_server_exits_3() -> None:
    closed = await arun_cli("get", "a", "--url", "http://127.0.0.1:9", "--token", WRITE_TOKEN)
    assert closed.code == 3 and "cannot reach http://127.0.0.1:9" in closed.err
    assert_no_token(closed)

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        silent = await arun_cli("status", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert silent.code == 3 and "did not answer within 0.5 s" in silent.err
    bad_url = await arun_cli("status", "--url", "ftp://user:pw@host")
    assert bad_url.code == 2 and "pw" not in bad_url.err


@pytest_asyncio.fixture
async def fake_server() -> AsyncIterator[Callable[[int, bytes], Any]]:
    """``url = await fake_server(status, body)``: an HTTP server giving one fixed answer."""
    servers: list[asyncio.Server] = []

    async def start(status: int, body: bytes) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (500, b'{"error": "boom"}', 5, "answered 500: boom"),
        (503, b'{"error": "the tree is stopped"}', 3, "unavailable (503): the tree is stopped"),
        (200, b"<html>", 5, "not JSON"),
        (400, b'{"error": "invalid path"}', 2, "refused (400): invalid path"),
        (422, b'{"error": "invalid", "problems": [{"path": "a.b", "message": "bad (from x)"}]}',
         1, "a.b: bad (from x)"),
    ],
)  # fmt: skip
async def test_server_errors_map_to_exit_codes(
    fake_server: Callable[[int, bytes], Any], status: int, body: bytes, code: int, message: str
) -> None:
    url = await fake_server(status, body)
    result = await arun_cli("reload", "--url", url, "--token", WRITE_TOKEN)
    assert result.code == code and message in result.err
    assert_no_token(result)


# -- watch -----------------------------------------------------------------------------------


async def test_watch_prints_changes_not_the_snapshot(serve: Callable[..., Any]) -> None:
    url = await serve()
    env = online_env(url, READ_TOKEN)
    async with follow("watch", "rate_limiting.**", "--count", "2", env=env) as watch:
        await watch.until(lambda: any("watching" in line for line in watch.err), "the snapshot")
        await Config.of("cli").put("rate_limiting.per_ip", 11)
        await Config.of("cli").put("database.password", "other-secret-pw")  # not matched
        await Config.of("cli").put("rate_limiting.burst", 7)
        assert await watch.finished() == 0
    assert len(watch.out) == 2
    version, rest = watch.out[0].split(" ", 1)
    assert version.isdigit() and rest == "rate_limiting.per_ip: 10 -> 11"
    assert watch.out[1].endswith("rate_limiting.burst: 5 -> 7")
    assert all(ANSI not in line for line in watch.out + watch.err)


async def test_watch_redacts_secret_changes(serve: Callable[..., Any]) -> None:
    url = await serve()
    async with follow("watch", "database.*", "--count", "1", env=online_env(url)) as watch:
        await watch.until(lambda: any("watching" in line for line in watch.err), "the snapshot")
        await Config.of("cli").put("database.password", "new-secret-pw")
        assert await watch.finished() == 0
    assert watch.out[0].endswith('database.password: "**redacted**" -> "**redacted**"')
    assert "new-secret-pw" not in "".join(watch.out + watch.err)


class Proxy:
    """A TCP proxy in front of the admin API that the test can cut and block."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.accepting = True
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.pairs.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        sink.transport.abort()

    def cut(self) -> None:
        """Drop every open connection, both ways."""
        for client, upstream in self.pairs:
            client.transport.abort()
            upstream.transport.abort()
        self.pairs.clear()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def lost(watch: Follow) -> bool:
    return any("reconnecting" in line for line in watch.err)


async def test_watch_resumes_after_a_dropped_connection_without_losing_a_change(
    serve: Callable[..., Any],
) -> None:
    url = await serve()
    config = Config.of("cli")
    async with Proxy(port_of(url)) as proxy:
        env = online_env(proxy.url)
        async with follow("watch", "rate_limiting.per_ip", "--count", "3", env=env) as watch:
            await watch.until(lambda: any("watching" in line for line in watch.err), "the snapshot")
            await config.put("rate_limiting.per_ip", 1)
            await watch.until(lambda: len(watch.out) == 1, "the first change")
            proxy.accepting = False
            proxy.cut()
            await config.put("rate_limiting.per_ip", 2)  # while the watch is disconnected
            await watch.until(lambda: lost(watch), "a reconnect attempt")
            proxy.accepting = True
            await config.put("rate_limiting.per_ip", 3)
            assert await watch.finished() == 0
    assert [line.split(" ", 1)[1] for line in watch.out] == [
        "rate_limiting.per_ip: 10 -> 1",
        "rate_limiting.per_ip: 1 -> 2",
        "rate_limiting.per_ip: 2 -> 3",
    ]
    assert_no_token(Result(0, "\n".join(watch.out), "\n".join(watch.err)))


async def test_watch_says_it_resynced_when_the_missed_changes_are_gone(
    serve: Callable[..., Any],
) -> None:
    url = await serve(events_kept=1)
    config = Config.of("cli")
    async with Proxy(port_of(url)) as proxy:
        env = online_env(proxy.url)
        async with follow("watch", "rate_limiting.**", "--count", "2", env=env) as watch:
            await watch.until(lambda: any("watching" in line for line in watch.err), "the snapshot")
            await config.put("rate_limiting.per_ip", 1)
            await watch.until(lambda: len(watch.out) == 1, "the first change")
            proxy.accepting = False
            proxy.cut()
            await config.put("rate_limiting.per_ip", 2)
            await config.put("rate_limiting.per_ip", 3)  # only this one is kept now
            await watch.until(lambda: lost(watch), "a reconnect attempt")
            proxy.accepting = True
            await watch.until(lambda: any("resynced" in line for line in watch.out), "a resync")
            await config.put("rate_limiting.burst", 9)
            assert await watch.finished() == 0
    assert len(watch.out) == 3
    assert watch.out[0].endswith("rate_limiting.per_ip: 10 -> 1")
    assert "resynced" in watch.out[1]
    assert watch.out[2].endswith("rate_limiting.burst: 5 -> 9")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_watch_stops_cleanly_on_a_signal(serve: Callable[..., Any], signum: int) -> None:
    url = await serve()
    async with follow("watch", env=online_env(url)) as watch:
        await watch.until(lambda: any("watching" in line for line in watch.err), "the snapshot")
        watch.proc.send_signal(signum)
        assert await watch.finished() == 0
    assert any("stopped after 0 changes" in line for line in watch.err)
    assert not any("Traceback" in line for line in watch.err)


async def test_watch_that_cannot_connect_exits_3() -> None:
    result = await arun_cli("watch", "--url", "http://127.0.0.1:9", "--count", "1")
    assert result.code == 3 and "cannot reach" in result.err


async def test_watch_refuses_a_bad_pattern(serve: Callable[..., Any]) -> None:
    url = await serve()
    result = await arun_cli("watch", "a.[", env=online_env(url))
    assert result.code == 2


# -- input the review found --------------------------------------------------------------------


def test_offline_get_inside_a_secret_section_is_redacted_like_the_section(
    tmp_path: Path,
) -> None:
    config = tmp_path / "secret.toml"
    config.write_text('[password]\nx = "hunter2-hunter2"\n')
    result = run_cli("get", "password.x", "--file", str(config))
    assert (result.code, json.loads(result.out)) == (0, "**redacted**")
    assert "hunter2" not in result.both


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://[::1"])
def test_a_url_that_cannot_be_parsed_is_a_usage_error(url: str) -> None:
    result = run_cli("status", "--url", url)
    assert result.code == 2 and "Traceback" not in result.both


async def test_a_token_with_a_trailing_newline_works_and_a_control_character_is_refused(
    serve: Callable[..., Any],
) -> None:
    url = await serve()
    stripped = await arun_cli("get", "rate_limiting.per_ip", env=online_env(url, READ_TOKEN + "\n"))
    assert stripped.code == 0 and json.loads(stripped.out) == 10
    broken = await arun_cli(
        "get", "rate_limiting.per_ip", env=online_env(url, "ab\x01" + READ_TOKEN)
    )
    assert broken.code == 2 and "OTPYLIB_CONFIG_TOKEN" in broken.err
    assert "Traceback" not in broken.both
    assert_no_token(stripped, broken)


async def test_a_put_value_that_is_not_json_is_never_echoed(serve: Callable[..., Any]) -> None:
    url = await serve()
    result = await arun_cli("put", "rate_limiting.per_ip", "sekrit-unquoted", env=online_env(url))
    assert result.code == 2 and "sekrit-unquoted" not in result.both


@pytest.mark.parametrize(
    "chunks",
    [
        [b"event: a\ndata: 1\n\n"],
        [b"event: a\r", b"\ndata: 1\r\n", b"\r\n"],
        [b"event: a\rdata: 1\r\r"],
        [b"ev", b"ent: a\n", b"data", b": 1\n", b"\n"],
    ],
)
async def test_watch_splits_lines_at_any_newline_across_chunks(chunks: list[bytes]) -> None:
    from otpylib_config.cli._watch import _lines

    class Body:
        async def iter_any(self) -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

    lines = [line async for line in _lines(Body())]  # type: ignore[arg-type]
    assert lines == ["event: a", "data: 1", ""]
