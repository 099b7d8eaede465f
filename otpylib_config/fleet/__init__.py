"""The fleet view (docs/fleet.md): ``ConfigSpec(fleet=FleetSpec(node=...))`` announces the
tree in etcd; :func:`read_fleet` lists every node announced and says whether they agree
on the configuration. Importing this package does not import aiohttp: the announcer
(:mod:`otpylib_config.fleet.announcer`) is imported when a tree starts one, the etcd
client when the fleet is read."""

from otpylib_config.fleet.options import DEFAULT_PREFIX, FleetSpec
from otpylib_config.fleet.view import Fleet, FleetError, FleetReader, Node, decode, read_fleet

__all__ = [
    "DEFAULT_PREFIX",
    "Fleet",
    "FleetError",
    "FleetReader",
    "FleetSpec",
    "Node",
    "decode",
    "read_fleet",
]
