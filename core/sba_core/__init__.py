"""The pure core of SBA Agentic: models, lifecycle, planning and tool contracts.

Nothing in this package performs I/O; the operator, the API, the store and the
tool runtime are thin adapters around it.
"""
