"""The admin HTTP API (docs/admin.md): ``ConfigSpec(admin=AdminSpec(...))`` runs it as a
supervised child of the tree. Importing this package does not import aiohttp; the server
(:mod:`otpylib_config.admin.server`) is imported when a tree starts one."""

from otpylib_config.admin.options import AdminSpec, AdminToken, AdminTokenError

__all__ = ["AdminSpec", "AdminToken", "AdminTokenError"]
