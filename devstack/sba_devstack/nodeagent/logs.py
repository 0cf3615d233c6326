"""One JSON object per line on stderr: what the agent did, for humans and log tooling."""

from __future__ import annotations

import datetime
import json
import sys
import threading
from typing import Any, TextIO

_lock = threading.Lock()


def log(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    record: dict[str, Any] = {
        "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        "component": "node-agent",
        "event": event,
    }
    record.update(fields)
    line = json.dumps(record, default=str, separators=(",", ":"))
    with _lock:
        out = stream if stream is not None else sys.stderr
        out.write(line + "\n")
        out.flush()
