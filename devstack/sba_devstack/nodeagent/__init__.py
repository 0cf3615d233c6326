"""Local node agent: a dev/test-only stand-in for a kubelet.

It registers a Node, keeps its Lease fresh, watches the Pods the real scheduler binds to
it and runs each one's container as a sandboxed subprocess, reporting Pod status the way
a kubelet does, so the real Job controller sees ordinary pods. Nothing here is imported
by production code.
"""
