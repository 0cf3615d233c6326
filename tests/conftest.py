"""Test-wide fixtures. Each real component has its own fixture module."""

pytest_plugins = [
    "tests.fixtures.controlplane",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.nodeagent",
    "tests.fixtures.stack",
]
