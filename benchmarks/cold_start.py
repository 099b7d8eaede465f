"""One cold start, in a fresh interpreter: import a configuration library, load a TOML file
and one environment variable over it, print one value, exit.

    python cold_start.py VARIANT CONFIG.toml

``run.py`` (row 10) starts this script once per run and variant, each variant with the
interpreter of its own virtualenv, and times it from the spawn to the value on stdout (and
to the exit). Every variant reads the same file (``layout()``: 100 keys in 4 sections,
written by ``run.py``) and the same override, ``server.port`` from the environment (named
for each library by ``OVERRIDE_VARIABLES``), and prints ``server.port``, which ``run.py``
checks is ``OVERRIDE_VALUE`` and not the file's ``FILE_PORT``. The last line on stdout is
the process's peak RSS (``peak_rss_kib()``).

Variants (``VARIANTS``):

* ``ours-start``: this project as a service starts it: ``await start(spec)`` (a
  ``FileSource`` with its defaults, so watched, and an ``EnvironmentSource(prefix="BENCH_")``,
  the default reload timer), ``Config.get_nowait``, ``await tree.stop()``.
* ``ours-load``: the same spec read once by ``otpylib_config.load(spec)`` (no runtime).
* ``pydantic-settings``: a ``BaseSettings`` model of the 100 keys (required fields, one
  nested model per section, built with ``create_model``), its sources init, env
  (``env_prefix="BENCH_"``, ``env_nested_delimiter="__"``) and ``TomlConfigSettingsSource``.
* ``dynaconf``: ``Dynaconf(settings_files=[file], envvar_prefix="BENCH")``,
  ``settings.server.port``.
* ``otpylib-config-0.2.9``: 0.2.9's ``start`` (inside a process, as it requires) with its
  ``FileSource`` and ``EnvironmentSource(prefix="BENCH_")``, ``await Config.get``; its
  runtime is then shut down by cancelling its processes (0.2.9's own stop does not stop).
* ``tomllib-environ``: the floor: ``tomllib.load`` and the ``BENCH_`` variables applied by
  hand (``__`` nests, integers parsed).

Standard library only at the top: each variant imports its library itself, so the import is
part of what is timed, and the script runs in every virtualenv.
"""

from __future__ import annotations

import sys
from typing import Any

FILE_PORT = 8000
OVERRIDE_VALUE = 9000
OVERRIDE_VARIABLES = {
    # 0.2.9's EnvironmentSource turns every "_" after the prefix into a dot.
    "otpylib-config-0.2.9": "BENCH_SERVER_PORT",
}
DEFAULT_VARIABLE = "BENCH_SERVER__PORT"
SECTIONS = ("server", "database", "cache", "features")
KEYS_PER_SECTION = 25


def override_variable(variant: str) -> str:
    """The environment variable that sets ``server.port`` for ``variant``."""
    return OVERRIDE_VARIABLES.get(variant, DEFAULT_VARIABLE)


def layout() -> dict[str, dict[str, Any]]:
    """The configuration in the file: 4 sections of 25 keys (ints, strings, floats and
    bools), ``server.port`` = ``FILE_PORT`` among them."""
    config: dict[str, dict[str, Any]] = {}
    for s, section in enumerate(SECTIONS):
        keys: dict[str, Any] = {}
        for k in range(KEYS_PER_SECTION - (section == "server")):
            value: Any = (s * 100 + k, f"text-{s}-{k}", k + 0.5, k % 2 == 0)[k % 4]
            keys[f"option_{k:02d}"] = value
        if section == "server":
            keys["port"] = FILE_PORT
        config[section] = keys
    return config


def to_toml(config: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = f'"{value}"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def ours_spec(path: str) -> Any:
    from otpylib_config import ConfigSpec, EnvironmentSource, FileSource

    return ConfigSpec(id="cold", sources=[FileSource(path), EnvironmentSource(prefix="BENCH_")])


def ours_start(path: str) -> Any:
    import asyncio

    import otpylib_config

    async def main() -> Any:
        tree = await otpylib_config.start(ours_spec(path))
        try:
            value = otpylib_config.Config.get_nowait("server.port")
            print(value, flush=True)
        finally:
            await tree.stop()

    asyncio.run(main())


def ours_load(path: str) -> Any:
    import otpylib_config

    print(otpylib_config.load(ours_spec(path)).get("server.port"), flush=True)


def pydantic_settings(path: str) -> None:
    from pydantic import BaseModel, create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

    class Base(BaseSettings):
        model_config = SettingsConfigDict(
            toml_file=path, env_prefix="BENCH_", env_nested_delimiter="__"
        )

        @classmethod
        def settings_customise_sources(  # type: ignore[override]
            cls,
            settings_cls: Any,
            init_settings: Any,
            env_settings: Any,
            dotenv_settings: Any,
            file_secret_settings: Any,
        ) -> tuple[Any, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    sections: dict[str, Any] = {}
    for section, keys in layout().items():
        fields: dict[str, Any] = {key: (type(value), ...) for key, value in keys.items()}
        model = create_model(section.title(), __base__=BaseModel, **fields)
        sections[section] = (model, ...)
    settings_model = create_model("Settings", __base__=Base, **sections)
    print(settings_model().server.port, flush=True)


def dynaconf(path: str) -> None:
    from dynaconf import Dynaconf

    settings = Dynaconf(settings_files=[path], envvar_prefix="BENCH")
    print(settings.server.port, flush=True)


def otpylib_config_029(path: str) -> None:
    import asyncio
    import contextlib

    from otpylib import process
    from otpylib.runtime import reset_runtime, set_runtime
    from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend

    import otpylib_config
    from otpylib_config import Config, ConfigSpec, EnvironmentSource, FileSource

    async def main() -> Any:
        backend = AsyncIOBackend()
        await backend.initialize()
        set_runtime(backend)
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def body() -> None:
            try:
                spec = ConfigSpec(
                    id="cold",
                    sources=[FileSource(path, format="toml"), EnvironmentSource(prefix="BENCH_")],
                )
                await otpylib_config.start(spec)
                got.set_result(await Config.get("server.port"))
            except Exception as exc:
                got.set_exception(exc)

        await process.spawn(body)
        try:
            return await asyncio.wait_for(got, 30.0)
        finally:
            tasks = [p.task for p in backend._processes.values() if p.task and not p.task.done()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            reset_runtime()

    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # 0.2.9 prints [TRACE:...] lines
        value = asyncio.run(main())
    print(value, file=stdout, flush=True)


def tomllib_environ(path: str) -> None:
    import os
    import tomllib

    with open(path, "rb") as file:
        config = tomllib.load(file)
    for name, text in os.environ.items():
        if not name.startswith("BENCH_"):
            continue
        *parents, leaf = name[len("BENCH_") :].lower().split("__")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = int(text)
        except ValueError:
            node[leaf] = text
    print(config["server"]["port"], flush=True)


VARIANTS = {
    "ours-start": ours_start,
    "ours-load": ours_load,
    "pydantic-settings": pydantic_settings,
    "dynaconf": dynaconf,
    "otpylib-config-0.2.9": otpylib_config_029,
    "tomllib-environ": tomllib_environ,
}


def peak_rss_kib() -> int | None:
    """This process's peak resident set since its ``exec`` (``VmHWM``, Linux).

    Not ``ru_maxrss``: Linux keeps the larger of the new image's peak and the RSS the
    process had before ``exec``, which for a child of ``fork``/``vfork`` is its parent's
    (``run.py``'s, tens of MiB), so every child would report at least that."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    VARIANTS[sys.argv[1]](sys.argv[2])
    print(f"peak_rss_kib {peak_rss_kib()}", flush=True)
