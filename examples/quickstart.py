"""otpylib-config in one minute: run with ``./scripts/demo``.

Starts a config tree on examples/quickstart/config.toml (copied to a temporary directory so
the demo can edit it), environment variables with the ``QUICKSTART_`` prefix, and the
runtime layer. Then it reads, puts, edits the file (the watcher publishes the edit), reloads
after an environment change, and shows the subscription events and telemetry that produced.
It exits by itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import otpylib_config
from otpylib_config import Config, ConfigSpec, EnvironmentSource, FileSource, telemetry

EXAMPLE = Path(__file__).parent / "quickstart" / "config.toml"


def show(title: str) -> None:
    print(f"\n== {title}")


async def main(config_file: Path) -> None:
    os.environ["QUICKSTART_DATABASE__POOL_SIZE"] = "20"  # env beats the file
    os.environ["QUICKSTART_SECURITY__SECRET_KEY"] = "s3cr3t"  # secret: redacted in telemetry
    spec = ConfigSpec(
        id="quickstart",
        sources=[FileSource(config_file), EnvironmentSource(prefix="QUICKSTART_")],
        reload_interval=30.0,
    )
    telemetry.attach_many(
        "demo-log",
        [telemetry.PUT, telemetry.RELOAD_STOP, telemetry.CHANGED],
        lambda event, measurements, metadata, _: print(f"   telemetry {event} {dict(metadata)}"),
    )

    async with otpylib_config.running(spec):
        show("reads come from the published snapshot (no message to the server)")
        print("   server.port          =", await Config.get("server.port"))
        print("   database.pool_size   =", Config.get_nowait("database.pool_size"), "(from env)")
        print("   database             =", dict(await Config.get("database")))
        print("   missing.key          =", await Config.get("missing.key", default=10))

        show("subscriptions: events at the granularity of the pattern")

        # Callbacks may be plain functions or coroutines; one of each here.
        def on_rules(path: str, old: Any, new: Any) -> None:
            print(f"   event {path}: {old} -> {new}")

        async def on_limits(path: str, old: Any, new: Any) -> None:
            print(f"   event {path}: {old} -> {new}")

        await Config.subscribe("queuemizer.tc_rules.*", on_rules)
        await Config.subscribe("rate_limits.*", on_limits)

        show("a runtime put: highest priority, read back at once")
        await Config.put("rate_limits.api", {"requests": 1000, "window": 60})
        print("   rate_limits.api      =", dict(await Config.get("rate_limits.api")))
        await Config.put("security.secret_key", "rotated")  # telemetry shows it redacted
        secret = await Config.get("security.secret_key")
        print("   security.secret_key  =", secret, "(get returns secrets)")
        await asyncio.sleep(0.05)

        show("an operator edits the file; the file watcher publishes it at once")
        edited = asyncio.Event()
        await Config.subscribe("server.port", lambda *_: edited.set())
        text = config_file.read_text().replace('rate = "10mbit"', 'rate = "20mbit"')
        config_file.write_text(text.replace("port = 8000", "port = 8080"))
        await asyncio.wait_for(edited.wait(), timeout=10)
        print("   server.port          =", Config.get_nowait("server.port"))
        await asyncio.sleep(0.05)

        show("the environment is not watched: reload() re-reads it and says what changed")
        os.environ["QUICKSTART_SERVER__WORKERS"] = "8"
        result = await Config.reload()
        print("   changed:", ", ".join(result.changed))
        await asyncio.sleep(0.05)

        show("delete removes only the runtime override; the file's value shows again")
        await Config.delete("rate_limits.api")
        print("   rate_limits.api      =", dict(await Config.get("rate_limits.api")))
        await asyncio.sleep(0.05)

        show("status")
        status = await Config.status()
        print(f"   version {status.version}, hash {status.config_hash[:12]}")
        print(f"   counters {dict(status.counters)}")
        for source in status.sources:
            print(f"   source {source.name}: healthy={source.healthy}")
    telemetry.detach("demo-log")
    print("\nstopped cleanly")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        shutil.copy(EXAMPLE, config)
        asyncio.run(main(config))
