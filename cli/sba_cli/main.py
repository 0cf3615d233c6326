"""The `sba-agentic` command: one entry point for every process of the system.

Each subcommand imports only the component it starts, so the operator's
process never loads the API's code and vice versa.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _operator(args: argparse.Namespace) -> int:
    from sba_operator.main import run

    return run()


def _api(args: argparse.Namespace) -> int:
    from sba_api.main import run

    return run()


def _node_agent(args: argparse.Namespace) -> int:
    from sba_devstack.nodeagent.main import run

    return run()


def _migrate(args: argparse.Namespace) -> int:
    from sba_store.migrate import run

    return run()


def _crds(args: argparse.Namespace) -> int:
    from sba_core.crds import write_crds

    write_crds(args.out)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from sba_devstack.stack import run

    return run(args.action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sba-agentic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "operator": ("run the Kopf operator", _operator),
        "api": ("run the HTTP API", _api),
        "node-agent": ("run the local node agent (dev and tests only)", _node_agent),
        "migrate": ("apply the SQL migrations", _migrate),
    }
    for name, (help_text, func) in commands.items():
        sub.add_parser(name, help=help_text).set_defaults(func=func)
    crds = sub.add_parser("crds", help="write the CRD manifests generated from the models")
    crds.add_argument("--out", default="crds")
    crds.set_defaults(func=_crds)
    dev = sub.add_parser("dev", help="bring the local stack up or down")
    dev.add_argument("action", choices=["up", "down", "status"], nargs="?", default="up")
    dev.set_defaults(func=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
