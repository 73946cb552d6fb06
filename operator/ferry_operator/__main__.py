"""``ferry-operator``: run the operator (default), or one of its install-time jobs.

ferry-operator [run] [--instance NAME]     the kopf operator, all namespaces
ferry-operator keygen --namespace NS ...   make the SSH Secrets if missing
ferry-operator uninstall-cleanup           before a Helm uninstall
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .kube import Kube, api_client

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def log_level(name: str) -> int:
    """The chart's operator.logLevel (FERRY_LOG_LEVEL): debug, info, warning or error."""
    try:
        return LOG_LEVELS[name.strip().lower()]
    except KeyError:
        raise SystemExit(f"FERRY_LOG_LEVEL={name!r}: use one of {', '.join(LOG_LEVELS)}") from None


def run(_: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415 - only the operator needs kopf's import-time setup

    from . import handlers  # noqa: F401, PLC0415 - imported for its kopf registrations

    level = log_level(os.environ.get("FERRY_LOG_LEVEL", "info"))
    kopf.configure(
        log_format=kopf.LogFormat.PLAIN,
        debug=level <= logging.DEBUG,
        quiet=level >= logging.WARNING,
    )
    logging.getLogger().setLevel(level)
    logging.getLogger("asyncssh").setLevel(max(level, logging.WARNING))
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))
    return 0


def keygen(args: argparse.Namespace) -> int:
    from .keygen import ensure_ssh_secrets  # noqa: PLC0415

    with api_client() as api:
        done = asyncio.run(
            ensure_ssh_secrets(
                Kube(api),
                namespace=args.namespace,
                operator_secret=args.operator_secret,
                node_helper_secret=args.node_helper_secret,
            )
        )
    print("\n".join(done) or "both SSH Secrets exist; nothing to do")
    return 0


def uninstall_cleanup(args: argparse.Namespace) -> int:
    from .cleanup import cleanup  # noqa: PLC0415

    with api_client() as api:
        done = asyncio.run(
            cleanup(
                Kube(api),
                grace_seconds=args.timeout,
                delete_checkpoints=args.delete_checkpoints,
                operator=(
                    (args.namespace, args.operator_deployment) if args.operator_deployment else None
                ),
            )
        )
    print("\n".join(done) or "no Ferry objects: nothing to cancel or release")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ferry-operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--instance", default="", help="a name for this operator in process lists")
    top.set_defaults(func=run)
    sub = top.add_subparsers(dest="command")
    sub.add_parser("run", help="run the operator (the default)").set_defaults(func=run)
    kg = sub.add_parser("keygen", help="create the SSH Secrets if missing")
    kg.add_argument("--namespace", required=True)
    kg.add_argument("--operator-secret", required=True)
    kg.add_argument("--node-helper-secret", required=True)
    kg.set_defaults(func=keygen)
    cl = sub.add_parser(
        "uninstall-cleanup",
        help="cancel what is in flight, then release every Ferry object (checkpoints stay)",
    )
    cl.add_argument("--timeout", type=float, default=120)
    cl.add_argument(
        "--operator-deployment",
        default="",
        help="the operator's Deployment, scaled to 0 before the finalizers are released",
    )
    cl.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="its namespace (default: $POD_NAMESPACE)",
    )
    cl.add_argument(
        "--delete-checkpoints",
        action="store_true",
        help="also delete every ContainerCheckpoint (and what it stored) and ContainerRestore",
    )
    cl.set_defaults(func=uninstall_cleanup)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
