"""Process rlimits standing in for a container's cgroup limits.

Names are `resource.RLIMIT_*` names so the spec survives JSON on its way to the launcher.
RLIMIT_AS bounds virtual memory, which Python and glibc reserve generously, so it gets
headroom; the agent additionally enforces `limits.memory` against resident memory
(see sandbox.group_rss_bytes), which is what the kernel's OOM killer would look at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sba_devstack.nodeagent.quantity import parse_quantity

GIB = 2**30
MIN_ADDRESS_SPACE = GIB
ADDRESS_SPACE_FACTOR = 4
DEFAULT_NOFILE = 4096


def derive_rlimits(
    limits: Mapping[str, str],
    active_deadline_seconds: int | None = None,
    cpu_count: int = 1,
) -> dict[str, int]:
    """rlimit name -> value (soft == hard) for a container's `resources.limits`.

    - memory -> RLIMIT_AS = max(limit * 4, 1 GiB)
    - cpu (cores) with a deadline -> RLIMIT_CPU = ceil(cores * deadline) + 1 seconds,
      the most CPU time the container could get before the deadline anyway
    - ephemeral-storage -> RLIMIT_FSIZE (largest file it may write)
    - always RLIMIT_NOFILE = 4096 and RLIMIT_CORE = 0
    """
    result: dict[str, int] = {"RLIMIT_NOFILE": DEFAULT_NOFILE, "RLIMIT_CORE": 0}
    memory = limits.get("memory")
    if memory is not None:
        result["RLIMIT_AS"] = max(
            int(parse_quantity(memory)) * ADDRESS_SPACE_FACTOR, MIN_ADDRESS_SPACE
        )
    if active_deadline_seconds is not None and active_deadline_seconds > 0:
        cpu = limits.get("cpu")
        cores = float(parse_quantity(cpu)) if cpu is not None else float(cpu_count)
        result["RLIMIT_CPU"] = math.ceil(cores * active_deadline_seconds) + 1
    storage = limits.get("ephemeral-storage")
    if storage is not None:
        result["RLIMIT_FSIZE"] = max(int(parse_quantity(storage)), 1)
    return result


def memory_limit_bytes(limits: Mapping[str, str]) -> int | None:
    memory = limits.get("memory")
    return int(parse_quantity(memory)) if memory is not None else None
