"""``kubectl ferry``: the command line (argparse), and the one place errors become exit codes.

kubectl runs any ``kubectl-ferry`` on PATH for ``kubectl ferry ...``, passing
the arguments after ``ferry``. The global options are accepted before and
after the command (``kubectl ferry -n apps list`` and ``kubectl ferry list -n apps``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ferry_api import InvalidResourceError
from ferry_api.migration import Compression, MemoryTransfer
from ferry_api.runtime import Runtime

from ferry_kubectl import commands, output
from ferry_kubectl.errors import PluginError

PROG = "kubectl ferry"
EXIT_INTERRUPTED = 130

EXAMPLES = """\
examples:
  kubectl ferry migrate web --from node-a --to node-b    move a container and watch it
  kubectl ferry migrate web --from node-a --dry-run      print the manifest, create nothing
  kubectl ferry migrate pod/counter-7d9c8b-x2k4p --to node-b   move a pod, all its containers
  kubectl ferry apply -f move-web.yaml                   create from a manifest and watch it
  kubectl ferry watch web-x7k2p                          follow a migration to its end
  kubectl ferry list -A                                  migrations in every namespace
  kubectl ferry nodes                                    what each node can do (CRIU, runtimes)
  kubectl ferry inspect nightly-web                      what a ContainerCheckpoint holds
  kubectl ferry logs web-x7k2p                           the full logs of a failed step
  kubectl ferry drain node-a --max-parallel 2            move everything off node-a, 2 at once
  kubectl ferry policies                                 the MigrationPolicies in force
"""


class Parser(argparse.ArgumentParser):
    """argparse, with kubectl's error style: one ``error:`` line and exit code 1."""

    def error(self, message: str) -> NoReturn:
        output.error(f"{message} (see '{self.prog} --help')")
        sys.exit(1)


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
        "-o", "--output", choices=("text", "json"), default=default("text"), help="output format"
    )
    group.add_argument(
        "--no-color", action="store_true", default=default(False), help="no colours on a terminal"
    )
    return common


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
    parser.add_argument(
        "--timeout", type=int, metavar="SECONDS", help="roll back after this long (10-3600)"
    )
    parser.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="delete the resource this long after it ends"
    )


def _create_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        required=required,
        metavar="FILE",
        help="manifest of ContainerMigration(s), '-' for stdin",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the manifest (YAML; JSON with -o json), create nothing",
    )
    parser.add_argument("--no-watch", action="store_true", help="create, do not watch")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Live migration of containers with Ferry: create, follow and inspect "
        "ContainerMigrations, ContainerCheckpoints and NodeHelpers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    commands_ = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    below = [_common(top=False)]

    migrate = commands_.add_parser(
        "migrate", parents=below, help="create a ContainerMigration and watch it"
    )
    _migrate_options(migrate)
    _create_options(migrate, required=False)
    migrate.set_defaults(run=commands.migrate)

    apply = commands_.add_parser(
        "apply", parents=below, help="create ContainerMigration(s) from a file and watch them"
    )
    _create_options(apply, required=True)
    apply.set_defaults(run=commands.apply)

    watch = commands_.add_parser(
        "watch", parents=below, help="follow a migration until it ends (exit 1 unless it succeeds)"
    )
    watch.add_argument("name", metavar="NAME", help="the ContainerMigration, or podmigration/NAME")
    watch.set_defaults(run=commands.watch_command)

    listing = commands_.add_parser(
        "list", aliases=["ls"], parents=below, help="migrations, with phase and downtime"
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    listing.set_defaults(run=commands.list_migrations)

    nodes = commands_.add_parser(
        "nodes", parents=below, help="each node's helper: runtimes, CRIU and its features, kernel"
    )
    nodes.set_defaults(run=commands.nodes)

    inspect = commands_.add_parser(
        "inspect", parents=below, help="what a ContainerCheckpoint holds and where it is"
    )
    inspect.add_argument("name", metavar="CHECKPOINT", help="the ContainerCheckpoint")
    inspect.set_defaults(run=commands.inspect)

    logs = commands_.add_parser(
        "logs", parents=below, help="the full logs of a failed migration, checkpoint or restore"
    )
    logs.add_argument("name", metavar="NAME", help="the failed resource")
    logs.add_argument(
        "--kind", choices=sorted(commands.LOG_KINDS), default="migration", help="its kind"
    )
    logs.add_argument("--file", metavar="F", help="only this log (e.g. dump.log)")
    logs.add_argument("--output-dir", metavar="DIR", help="write the logs into DIR")
    logs.set_defaults(run=commands.logs_command)

    drain = commands_.add_parser(
        "drain",
        parents=below,
        help="cordon a node and live-migrate every workload Ferry may move off it "
        "(a NodeEvacuation); exit 1 unless all moved",
    )
    drain.add_argument("node", metavar="NODE", help="the node to empty")
    drain.add_argument("--name", help="the NodeEvacuation's name (default: drain-NODE)")
    drain.add_argument(
        "--max-parallel", type=int, metavar="N", help="migrations out of the node at once"
    )
    drain.add_argument("--no-cordon", action="store_true", help="leave the node schedulable")
    drain.add_argument(
        "--timeout", type=int, metavar="SECONDS", help="each migration's timeout (10-3600)"
    )
    drain.add_argument(
        "--dry-run", action="store_true", help="print the NodeEvacuation, create nothing"
    )
    drain.add_argument("--no-watch", action="store_true", help="create, do not follow")
    drain.set_defaults(run=commands.drain_command)

    policies = commands_.add_parser(
        "policies", parents=below, help="the MigrationPolicies and what each sets"
    )
    policies.set_defaults(run=commands.policies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    out = output.make(json_output=args.output == "json", no_color=args.no_color)
    try:
        code: int = args.run(commands.Env(args, out))
    except (PluginError, InvalidResourceError) as error:
        output.error(str(error))
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # A reader that stopped early (| head): not an error; keep Python quiet at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
