"""In-memory Moonshot and Z.ai file APIs for tests and benchmarks (imports nothing from app)."""

from app.sandbox.app import create_sandbox_app, create_standalone_app, is_loopback
from app.sandbox.core import ZAI_DEFAULT_RULES, FaultSpec, SandboxOptions, ZaiPurposeRule

__all__ = [
    "ZAI_DEFAULT_RULES",
    "FaultSpec",
    "SandboxOptions",
    "ZaiPurposeRule",
    "create_sandbox_app",
    "create_standalone_app",
    "is_loopback",
]
