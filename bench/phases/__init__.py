"""The bench phases, in the order they run; `core` is rows 1-4, which share state."""

PHASES = (
    "core",
    "fallback",
    "hang",
    "resilience",
    "auth",
    "queue",
    "wakeup",
    "objectstore",
    "replicas",
    "download",
    "uploads",
    "capacity",
    "pipelined",
)
