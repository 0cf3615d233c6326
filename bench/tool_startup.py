"""Tool pod start-up, printed as JSON.

What a tool Job's container spends before its tool does anything: the interpreter,
`sba_tools.runtime`'s imports, its settings and gateway client, the step envelope, and
the step's own tool — its contract loaded and its params checked (`StepRunner.prepare`).
Nothing is sent: the gateway's address is never contacted. Each figure is the median over
N fresh subprocesses, run interleaved (machine noise hits every command alike): wall time
from spawn to exit, and CPU time (user + system, from wait4).

Baselines, measured in the same run:
  - floor: `python -c pass`, the interpreter alone;
  - pydantic: importing pydantic and building one model, which any runtime that checks a
    contract with pydantic pays (the library's share, not the runtime's);
  - before: the eager registry, as `import sba_core.tools.registry` used to cost: every
    builtin contract model built, and `sba_core.models.run` (which it imported);
  - before_runtime: everything the runtime used to load at start-up: that, every tool's
    implementation module and the egress client.
Per bytecode mode, `ratio` is (ours - floor) / (before - floor), `ratio_vs_runtime` the
same against before_runtime, and `own_share` (ours - pydantic) / (before_runtime -
pydantic): what is left of the runtime's own start-up cost, beyond the library's. "ours"
is the slowest builtin (CPU); every tool's figures are listed.

Bytecode modes:
  - compiled: .pyc files in a private cache (PYTHONPYCACHEPREFIX, filled by one untimed
    run of each command first), as in the tool image, which is compiled at build time;
  - environment: bytecode as the calling environment has it. In the dev venv nothing
    under site-packages is compiled and PYTHONDONTWRITEBYTECODE=1 keeps it that way, so
    every dev tool pod compiles pydantic from source; `pyc_present` says which it was.
Usage: python bench/tool_startup.py [--runs N] [--mode compiled|environment|both]
                                    [--tools knowledge.search,render.document,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GOAL_RATIO = 0.10
"""The issue's goal: the runtime's start-up at most 10 % of the old eager cost."""

FLOOR = "pass"
PYDANTIC = """
from pydantic import BaseModel
class Probe(BaseModel):
    value: int
Probe(value=1)
"""
BEFORE = """
import sba_core.models.run
import sba_core.tools.registry as registry
for spec in registry.builtin_registry().values():
    spec.params.model, spec.result.model
"""
BEFORE_RUNTIME = (
    BEFORE
    + """
import sba_tools.egress
import sba_tools.runtime
from sba_tools.tools import IMPLEMENTATIONS
list(IMPLEMENTATIONS.values())
"""
)
OURS = """
import io, json, os
from sba_tools.gateway import GatewayClient, StepEnvelope
from sba_tools.jsonlog import JsonLogger
from sba_tools.runtime import StepRunner
from sba_tools.settings import RuntimeSettings
settings = RuntimeSettings.from_env()
log = JsonLogger(io.StringIO())
gateway = GatewayClient(
    settings.gateway_url, settings.step_token, timeout_seconds=settings.timeout_seconds, log=log
)
# What GET /internal/v1/step would answer, parsed as the gateway client parses it.
step = StepEnvelope.model_validate(json.loads(os.environ["SBA_BENCH_STEP"]))
StepRunner(settings, log, gateway).prepare(step)
"""

PARAMS: Mapping[str, dict[str, Any]] = {
    "knowledge.search": {"query": "refund policy"},
    "render.document": {"title": "Brief"},
    "task.create": {"title": "Call the customer back"},
    "crm.sync": {"scope": ["contacts"]},
    "http.fetch": {"url": "https://example.com/"},
    "llm.generate": {"prompt": "{goal}"},
}
RUN_ID = "6f1c2a9e-0000-4000-8000-00000000b001"


def step_env(tool: str) -> dict[str, str]:
    step = {
        "runId": RUN_ID,
        "tenant": "bench",
        "stepId": "s1",
        "attempt": 1,
        "tool": tool,
        "params": PARAMS[tool],
        "inputs": {},
    }
    return {
        "SBA_GATEWAY_URL": "http://127.0.0.1:9",  # never contacted
        "SBA_STEP_TOKEN": "bench-token",
        "SBA_RUN_ID": RUN_ID,
        "SBA_STEP_ID": "s1",
        "SBA_TOOL": tool,
        "SBA_TERMINATION_LOG": os.devnull,
        "SBA_BENCH_STEP": json.dumps(step),
    }


def run_once(code: str, env: Mapping[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh `python -c code`."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()  # returns at exit: the pipe closes with the process
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {code.strip()[:80]!r}\n{err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def figures(samples: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "wall_ms": round(statistics.median(w for w, _ in samples) * 1000, 1),
        "cpu_ms": round(statistics.median(c for _, c in samples) * 1000, 1),
    }


def ratio(ours: float, base: float, floor: float) -> float:
    return round((ours - floor) / (base - floor), 3) if base > floor else float("nan")


def pyc_present(env: Mapping[str, str]) -> bool:
    """Whether pydantic's bytecode would be read in `env` (as the mode runs it)."""
    spec = importlib.util.find_spec("pydantic")
    if spec is None or spec.origin is None:
        return False
    prefix = env.get("PYTHONPYCACHEPREFIX")
    if prefix:
        source = Path(spec.origin).resolve()
        return (Path(prefix) / source.parent.relative_to(source.anchor)).is_dir()
    return Path(importlib.util.cache_from_source(spec.origin)).exists()


def measure(env: dict[str, str], tools: list[str], runs: int) -> dict[str, Any]:
    commands: dict[str, tuple[str, dict[str, str]]] = {
        "floor": (FLOOR, env),
        "pydantic": (PYDANTIC, env),
        "before": (BEFORE, env),
        "before_runtime": (BEFORE_RUNTIME, env),
    }
    for tool in tools:
        commands[tool] = (OURS, {**env, **step_env(tool)})
    for code, command_env in commands.values():  # untimed: fills caches (files, bytecode)
        run_once(code, command_env)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (code, command_env) in commands.items():
            samples[name].append(run_once(code, command_env))
    result = {name: figures(s) for name, s in samples.items()}
    per_tool = {tool: result.pop(tool) for tool in tools}
    worst = max(per_tool, key=lambda t: per_tool[t]["cpu_ms"])
    ours = per_tool[worst]
    out: dict[str, Any] = {
        "pyc_present": pyc_present(env),
        **result,
        "tools": per_tool,
        "ours": {"tool": worst, **ours},
    }
    for key, base in (("ratio", "before"), ("ratio_vs_runtime", "before_runtime")):
        out[key] = {
            unit: ratio(ours[unit], result[base][unit], result["floor"][unit])
            for unit in ("wall_ms", "cpu_ms")
        }
    out["own_share"] = {
        unit: ratio(ours[unit], result["before_runtime"][unit], result["pydantic"][unit])
        for unit in ("wall_ms", "cpu_ms")
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh processes per command")
    parser.add_argument("--mode", choices=("compiled", "environment", "both"), default="both")
    parser.add_argument("--tools", default=",".join(PARAMS), help="comma-separated builtins")
    args = parser.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(PARAMS))
    if unknown or not tools:
        parser.error(f"--tools: choose among {', '.join(PARAMS)} (not {', '.join(unknown)})")

    modes: dict[str, Any] = {}
    if args.mode in ("compiled", "both"):
        cache = tempfile.mkdtemp(prefix="sba-bench-pyc-")
        try:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = cache
            print("measuring with compiled bytecode", file=sys.stderr)
            modes["compiled"] = measure(env, tools, args.runs)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    if args.mode in ("environment", "both"):
        print("measuring with the environment's bytecode", file=sys.stderr)
        modes["environment"] = measure(dict(os.environ), tools, args.runs)

    result = {
        "benchmark": "tool_startup",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "goal_ratio": GOAL_RATIO,
        "modes": modes,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
