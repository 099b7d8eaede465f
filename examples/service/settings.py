"""The example service's schema: validated before any configuration is published."""

from __future__ import annotations

import dataclasses

import pydantic


class Server(pydantic.BaseModel):
    host: str
    port: int = pydantic.Field(ge=1, le=65535)
    debug: bool = False
    workers: int = pydantic.Field(ge=1, le=64)


class Database(pydantic.BaseModel):
    url: str
    password: str
    pool_size: int = pydantic.Field(ge=1, le=100)
    max_overflow: int = pydantic.Field(ge=0)


class Security(pydantic.BaseModel):
    secret_key: str = pydantic.Field(min_length=8)
    algorithm: str
    token_ttl_s: int = pydantic.Field(gt=0)


class Settings(pydantic.BaseModel):
    server: Server
    database: Database
    security: Security
    redis: dict[str, str]
    rate_limits: dict[str, dict[str, int]]


@dataclasses.dataclass
class TcRule:
    """One interface's traffic-control rules; each interface is checked on its own."""

    rate: str
    burst: int

    def __post_init__(self) -> None:
        if not self.rate.endswith("bit"):
            raise ValueError(f"rate must end in 'bit', got {self.rate!r}")
        if self.burst <= 0:
            raise ValueError("burst must be positive")


VALIDATORS = {"queuemizer.tc_rules.*": TcRule}
