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


def _crm_standin(args: argparse.Namespace) -> int:
    """The CRM stand-in `make dev` and the tests run (SBA_CRM_STANDIN_PORT, _SEED)."""
    import os

    from sba_devstack.crm_standin import main

    argv = ["--port", os.environ.get("SBA_CRM_STANDIN_PORT", "8091")]
    seed = os.environ.get("SBA_CRM_STANDIN_SEED", "").strip()
    if seed:
        argv += ["--seed", seed]
    main(argv)
    return 0


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


def _token(args: argparse.Namespace) -> int:
    import os

    from sba_core.auth.dev_tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, mint_dev_token
    from sba_core.auth.permissions import ROLE_PERMISSIONS

    secret = os.environ.get("SBA_JWT_HS256_SECRET", "").strip()
    if len(secret) < 32:
        print("error: SBA_JWT_HS256_SECRET must be set (at least 32 characters)", file=sys.stderr)
        return 2
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = sorted(set(roles) - set(ROLE_PERMISSIONS))
    if unknown:
        print(f"error: unknown roles {unknown}; known: {sorted(ROLE_PERMISSIONS)}", file=sys.stderr)
        return 2
    print(
        mint_dev_token(
            secret,
            tenant=args.tenant,
            user=args.user,
            roles=roles,
            ttl_seconds=args.ttl,
            issuer=os.environ.get("SBA_JWT_ISSUER", "").strip() or DEFAULT_ISSUER,
            audience=os.environ.get("SBA_JWT_AUDIENCE", "").strip() or DEFAULT_AUDIENCE,
            tenant_claim=os.environ.get("SBA_JWT_TENANT_CLAIM", "").strip() or "tenant",
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sba-agentic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "operator": ("run the Kopf operator", _operator),
        "api": ("run the HTTP API", _api),
        "node-agent": ("run the local node agent (dev and tests only)", _node_agent),
        "crm-standin": ("run the local CRM stand-in (dev and tests only)", _crm_standin),
        "migrate": ("apply the SQL migrations", _migrate),
    }
    for name, (help_text, func) in commands.items():
        sub.add_parser(name, help=help_text).set_defaults(func=func)
    crds = sub.add_parser("crds", help="write the CRD manifests generated from the models")
    crds.add_argument("--out", default="crds")
    crds.set_defaults(func=_crds)
    token = sub.add_parser(
        "token", help="print an HS256 access token signed with SBA_JWT_HS256_SECRET (development)"
    )
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--roles", default="member", help="comma-separated, e.g. member,approver")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(func=_token)
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
