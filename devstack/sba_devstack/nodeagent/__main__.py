"""`python -m sba_devstack.nodeagent` (same as `sba-agentic node-agent`)."""

from sba_devstack.nodeagent.main import run

raise SystemExit(run())
