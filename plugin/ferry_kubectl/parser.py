"""``kubectl ferry``'s command line: every command, its options, and the help around them.

The global options are accepted before and after the command (``kubectl ferry
-n apps list`` and ``kubectl ferry list -n apps``). Every option that takes
seconds also takes a Go duration (``90s``, ``5m``, ``1h30m``), as kubectl's do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ferry_api.migration import Compression, MemoryTransfer
from ferry_api.runtime import Runtime

from ferry_kubectl import actions, commands, completion, output
from ferry_kubectl.durations import seconds_flag
from ferry_kubectl.errors import EXIT_CODES, EXIT_USAGE
from ferry_kubectl.output import Format
from ferry_kubectl.session import DryRun

PROG = "kubectl ferry"
#: What the flag alone becomes before parsing: kubectl's deprecated ``--dry-run``.
BARE_DRY_RUN = f"--dry-run={DryRun.BARE.value}"

EXAMPLES = """\
examples:
  kubectl ferry migrate web --from node-a --to node-b    move a container and watch it
  kubectl ferry migrate web --from node-a --dry-run=server -o yaml   validate it on the server
  kubectl ferry migrate pod/counter-7d9c8b-x2k4p --to node-b   move a pod, all its containers
  kubectl ferry apply -f move-web.yaml                   apply a manifest (again: a no-op)
  kubectl ferry watch web-x7k2p                          follow a migration to its end
  kubectl ferry cancel web-x7k2p                         roll a migration in flight back
  kubectl ferry checkpoint web --node node-a --name web-snap   checkpoint a container, keep it
  kubectl ferry restore web-snap --node node-b           start a container from a checkpoint
  kubectl ferry list -A -l team=web -o wide              migrations in every namespace
  kubectl ferry nodes                                    what each node can do (CRIU, runtimes)
  kubectl ferry inspect web-snap                         what a ContainerCheckpoint holds
  kubectl ferry logs web-x7k2p                           the full logs of a failed step
  kubectl ferry drain node-a --max-parallel 2            move everything off node-a, 2 at once
  kubectl ferry version                                  plugin, API server and operator versions
  source <(kubectl ferry completion bash)                completion for kubectl-ferry

durations: --timeout and --ttl take seconds (90) or Go durations (90s, 5m, 1h30m).
completion: kubectl (1.26+) completes `kubectl ferry ...` itself when
  kubectl_complete-ferry (installed with the plugin) is on PATH.

exit codes:
""" + "".join(f"  {code:<4} {meaning}\n" for code, meaning in EXIT_CODES)


class Parser(argparse.ArgumentParser):
    """argparse, with kubectl's error style: one ``error:`` line, and the usage exit code."""

    def error(self, message: str) -> NoReturn:
        output.error(f"{message} (see '{self.prog} --help')")
        sys.exit(EXIT_USAGE)


def _common(*, top: bool) -> Parser:
    """The global options; below a command they default to "not given", so they add up."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    common = Parser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the kubeconfig context's, else default)",
    )
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument("--context", default=default(None), help="kubeconfig context to use")
    group.add_argument(
        "-o",
        "--output",
        choices=[f.value for f in Format],
        default=default(Format.TEXT.value),
        help="text (for people), wide (more columns), json or yaml (whole objects), "
        "name (kind.group/name lines)",
    )
    group.add_argument(
        "--no-color", action="store_true", default=default(False), help="no colours on a terminal"
    )
    group.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        default=default(None),
        help="act as this user (impersonation, as kubectl's --as)",
    )
    group.add_argument(
        "--as-group",
        action="append",
        metavar="GROUP",
        default=default(None),
        help="act as a member of this group (repeatable; needs --as)",
    )
    return common


def _dry_run_flag(text: str) -> str:
    if text not in [m.value for m in DryRun]:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use client, server or none")
    return text


def _send_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--dry-run`` and ``--no-watch``, for every command that creates something."""
    parser.add_argument(
        "--dry-run",
        type=_dry_run_flag,
        metavar="{client,server,none}",
        default=DryRun.NONE.value,
        help=f"client: print the {what} (with -o yaml|json), send nothing; server: the API "
        "server validates it (schema and CEL rules) and keeps nothing. The flag alone is "
        "deprecated: it means client, printed as YAML",
    )
    parser.add_argument("--no-watch", action="store_true", help="create, do not follow")


def _seconds(parser: argparse.ArgumentParser, flag: str, meaning: str) -> None:
    parser.add_argument(flag, type=seconds_flag, metavar="DURATION", help=meaning)


def _migrate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "container",
        nargs="?",
        metavar="CONTAINER|pod/NAME",
        help="container name or ID; pod/NAME moves a Kubernetes pod (a PodMigration)",
    )
    parser.add_argument("--from", dest="source", metavar="NODE", help="node it runs on now")
    parser.add_argument("--to", dest="target", metavar="NODE", help="node to move it to")
    parser.add_argument("--name", help="the ContainerMigration's name (default: generated)")
    parser.add_argument(
        "--leave-running", action="store_true", help="keep the source running (copy)"
    )
    parser.add_argument(
        "--tcp-established", action="store_true", help="move established TCP connections"
    )
    parser.add_argument("--file-locks", action="store_true", help="move file locks")
    parser.add_argument(
        "--keep-checkpoint", action="store_true", help="keep the archive on the nodes afterwards"
    )
    parser.add_argument(
        "--compression", choices=[c.value for c in Compression], help="archive compression"
    )
    parser.add_argument(
        "--runtime",
        choices=[r.value for r in Runtime],
        help="the container's runtime (default: whichever has it, podman first)",
    )
    parser.add_argument(
        "--memory-transfer",
        choices=[m.value for m in MemoryTransfer],
        help="how the memory moves: in the archive (default), straight to CRIU's page "
        "server on the target (podman only), or Auto (the page server for podman "
        "containers using 64 MiB or more)",
    )
    parser.add_argument(
        "--no-page-server-tls",
        action="store_true",
        help="with PageServer: send the memory in clear (only on a node network you trust)",
    )
    _seconds(parser, "--timeout", "roll back after this long (10s-1h)")
    _seconds(parser, "--ttl", "delete the resource this long after it ends")
    parser.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        help="create the resources of a manifest instead ('-' for stdin); generateName allowed",
    )
    _send_options(parser, what="manifest")


def _checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER", help="container name or ID")
    parser.add_argument("--node", required=True, metavar="NODE", help="the node it runs on")
    parser.add_argument("--name", help="the ContainerCheckpoint's name (default: generated)")
    parser.add_argument("--stop", action="store_true", help="stop the container once checkpointed")
    parser.add_argument(
        "--tcp-established", action="store_true", help="include established TCP connections"
    )
    parser.add_argument("--file-locks", action="store_true", help="include file locks")
    parser.add_argument(
        "--compression", choices=[c.value for c in Compression], help="archive compression"
    )
    parser.add_argument(
        "--runtime", choices=[r.value for r in Runtime], help="the container's runtime"
    )
    parser.add_argument(
        "--registry",
        metavar="REPOSITORY",
        help="keep it as a checkpoint image in this registry repository (host[:port]/path), "
        "not on the node",
    )
    _send_options(parser, what="ContainerCheckpoint")


def _restore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the Ready ContainerCheckpoint")
    parser.add_argument("--node", metavar="NODE", help="restore there (default: its node)")
    parser.add_argument("--name", help="the ContainerRestore's name (default: generated)")
    parser.add_argument(
        "--container-name",
        metavar="NAME",
        help="the restored container's name (default: the one it was checkpointed with)",
    )
    parser.add_argument(
        "--tcp-established", action="store_true", help="restore established TCP connections"
    )
    parser.add_argument("--file-locks", action="store_true", help="restore file locks")
    _seconds(parser, "--timeout", "give up after this long (10s-1h)")
    _seconds(parser, "--ttl", "delete the resource this long after it ends")
    _send_options(parser, what="ContainerRestore")


def _drain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="the node to empty")
    parser.add_argument("--name", help="the NodeEvacuation's name (default: drain-NODE)")
    parser.add_argument(
        "--max-parallel", type=int, metavar="N", help="migrations out of the node at once"
    )
    parser.add_argument("--no-cordon", action="store_true", help="leave the node schedulable")
    _seconds(parser, "--timeout", "each migration's timeout (10s-1h)")
    _send_options(parser, what="NodeEvacuation")


def _reading(sub: argparse._SubParsersAction[Parser], below: list[Parser]) -> None:
    """The commands that read: list, nodes, inspect, logs, policies, version, completion."""
    listing = sub.add_parser(
        "list", aliases=["ls"], parents=below, help="migrations, with phase and downtime"
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    listing.add_argument(
        "-l", "--selector", metavar="SELECTOR", help="label selector (team=web,tier!=db)"
    )
    listing.set_defaults(run=commands.list_migrations)

    sub.add_parser(
        "nodes", parents=below, help="each node's helper: runtimes, CRIU and its features, kernel"
    ).set_defaults(run=commands.nodes)

    inspect = sub.add_parser(
        "inspect", parents=below, help="what a ContainerCheckpoint holds and where it is"
    )
    inspect.add_argument("name", metavar="CHECKPOINT", help="the ContainerCheckpoint")
    inspect.set_defaults(run=commands.inspect)

    logs = sub.add_parser(
        "logs", parents=below, help="the full logs of a failed migration, checkpoint or restore"
    )
    logs.add_argument("name", metavar="NAME", help="the failed resource")
    logs.add_argument(
        "--kind", choices=sorted(commands.LOG_KINDS), default="migration", help="its kind"
    )
    logs.add_argument("--file", metavar="F", help="only this log (e.g. dump.log)")
    logs.add_argument("--output-dir", metavar="DIR", help="write the logs into DIR")
    logs.set_defaults(run=commands.logs_command)

    sub.add_parser(
        "policies", parents=below, help="the MigrationPolicies and what each sets"
    ).set_defaults(run=commands.policies)

    version = sub.add_parser(
        "version", parents=below, help="the plugin's, the API server's and the operator's versions"
    )
    version.add_argument("--client", action="store_true", help="the plugin's alone")
    version.set_defaults(run=actions.version)

    shell = sub.add_parser("completion", help="a shell completion script for kubectl-ferry")
    shell.add_argument("shell", choices=sorted(completion.SCRIPTS), help="the shell")
    shell.set_defaults(run=completion.script_command)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Live migration of containers with Ferry: create, follow, cancel and "
        "inspect ContainerMigrations, PodMigrations, ContainerCheckpoints and "
        "ContainerRestores, and see what each node can do.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    below = [_common(top=False)]

    def command(name: str, run: Callable[..., int], help_: str) -> Parser:
        made = sub.add_parser(name, parents=below, help=help_)
        made.set_defaults(run=run)
        return made

    _migrate_options(
        command(
            "migrate", commands.migrate, "create a ContainerMigration (or PodMigration), follow it"
        )
    )
    apply = command(
        "apply", commands.apply, "server-side apply resources from a file and follow them"
    )
    apply.add_argument(
        "-f", "--filename", required=True, metavar="FILE", help="the manifest, '-' for stdin"
    )
    _send_options(apply, what="resources")
    watch = command(
        "watch", commands.watch_command, "follow a migration, checkpoint or restore to its end"
    )
    watch.add_argument(
        "name",
        metavar="NAME",
        help="a ContainerMigration, or KIND/NAME (podmigration/, containercheckpoint/, "
        "containerrestore/, their short names, or -o name's form)",
    )
    cancel = command(
        "cancel", actions.cancel, "cancel a migration in flight: it rolls back, the source runs on"
    )
    cancel.add_argument("name", metavar="NAME", help="a ContainerMigration, or podmigration/NAME")
    cancel.add_argument("--no-watch", action="store_true", help="delete it, do not follow")
    _checkpoint_options(
        command(
            "checkpoint",
            actions.checkpoint,
            "checkpoint a container and keep it (a ContainerCheckpoint)",
        )
    )
    _restore_options(
        command(
            "restore", actions.restore, "start a container from a checkpoint (a ContainerRestore)"
        )
    )
    _reading(sub, below)
    _drain_options(
        command(
            "drain",
            actions.drain_command,
            "cordon a node and live-migrate every workload Ferry may move off it "
            "(a NodeEvacuation); exit 1 unless all moved",
        )
    )
    return parser


def normalize(argv: Sequence[str]) -> list[str]:
    """kubectl's deprecated bare ``--dry-run`` as a value, so it never swallows the next word."""
    return [BARE_DRY_RUN if arg == "--dry-run" else arg for arg in argv]
