"""The official AG-UI client (`@ag-ui/client`'s HttpAgent, run by Node) drives a run through
POST /api/v1/agui: the answer arrives as several TEXT_MESSAGE_CONTENT deltas the client
assembles into one assistant message, and its own protocol checks accept the stream."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CLIENT = Path(__file__).parent / "agui_client"


def _run_client(stack: Stack, prompt: str, props: dict[str, Any] | None = None) -> Any:
    node = shutil.which("node")
    assert node is not None, "node is needed (make test installs the AG-UI client with npm)"
    assert (CLIENT / "node_modules" / "@ag-ui" / "client").is_dir(), "run `make agui-client`"
    done = subprocess.run(
        [node, "run.mjs", stack.api_url, stack.token(), prompt, json.dumps(props or {})],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_official_client_receives_the_answer_token_by_token(
    stack: Stack, demo_tenant: str
) -> None:
    seen = _run_client(stack, "What is our refund policy for damaged goods?")
    assert seen["error"] is None, seen
    assert seen["outcome"] == "success"
    assert seen["types"][0] == "RUN_STARTED"
    assert seen["types"][-1] == "RUN_FINISHED"
    deltas = [d for d in seen["deltas"] if d["messageId"].endswith("/answer/a1")]
    assert len(deltas) > 1, seen["deltas"]  # streamed, not one block at the end
    text = "".join(d["delta"] for d in deltas)
    assert text.startswith("Based on the knowledge base")
    assistant = [m for m in seen["finalMessages"] if m["role"] == "assistant"]
    assert [m["content"] for m in assistant if m["id"].endswith("/answer/a1")] == [text]
    assert seen["types"].count("TEXT_MESSAGE_START") == seen["types"].count("TEXT_MESSAGE_END")
