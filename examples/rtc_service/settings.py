"""The RTC service's schema: every value is checked before the service sees it, and a
start with bad values reports every problem at once, each with where it came from."""

from __future__ import annotations

from typing import Literal

import pydantic


class Server(pydantic.BaseModel):
    host: str
    port: int = pydantic.Field(ge=1, le=65535)


class WebSocket(pydantic.BaseModel):
    max_connections: int = pydantic.Field(ge=1, le=100_000)
    ping_interval_s: int = pydantic.Field(ge=1)


class RateLimiting(pydantic.BaseModel):
    per_ip: int = pydantic.Field(ge=1)
    per_user: int = pydantic.Field(ge=1)
    window_s: int = pydantic.Field(ge=1)


class Logging(pydantic.BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Redis(pydantic.BaseModel):
    url: str = pydantic.Field(pattern=r"^rediss?://")


class Auth(pydantic.BaseModel):
    jwt_secret: str = pydantic.Field(min_length=16)
    token_ttl_s: int = pydantic.Field(gt=0)


class Settings(pydantic.BaseModel):
    server: Server
    websocket: WebSocket
    rate_limiting: RateLimiting
    logging: Logging
    redis: Redis
    auth: Auth
