"""The builtin tools' contracts (params and result models), one module per tool.

A tool step loads its own tool's module only (`sba_core.tools.registry` names each
contract by where it lives); `sba_core.tools.contracts` re-exports them all.
"""
