"""One invocation's context (arguments, output, cluster), and the create-then-follow of makers.

``migrate``, ``apply``, ``checkpoint`` and ``restore`` all end here: each
body is placed in its namespace, then sent (created, or server-side applied)
unless the dry run is the client's, announced as kubectl announces it
(``containermigration.ferry.dev/web-x7k2p created``), and followed to its end
unless ``--no-watch``. ``-o json|yaml`` print the final objects, ``-o name``
the names at once; the exit code is the worst result.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ferry_kubectl import manifest, output
from ferry_kubectl.errors import EXIT_INTERRUPTED, EXIT_OK, PluginError
from ferry_kubectl.kinds import Kind, kind_of
from ferry_kubectl.kube import Cluster, api_client, context_namespace
from ferry_kubectl.output import Format, Output, resource_name
from ferry_kubectl.watch import watch

Body = dict[str, Any]
DEFAULT_NAMESPACE = "default"


class DryRun(StrEnum):
    """kubectl's ``--dry-run`` values; ``BARE`` is the flag alone (deprecated: client, as YAML)."""

    NONE = "none"
    CLIENT = "client"
    SERVER = "server"
    BARE = "bare"


#: What kubectl appends to what it did not really do.
DRY_RUN_SUFFIX = {DryRun.CLIENT: " (dry run)", DryRun.SERVER: " (server dry run)"}


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


@dataclass
class Env:
    """One invocation: its arguments, where it prints, and (made on first use) its cluster."""

    args: argparse.Namespace
    output: Output
    _cluster: Cluster | None = field(default=None, init=False)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            args = self.args
            groups = tuple(getattr(args, "as_group", None) or ())
            if groups and not getattr(args, "as_user", None):
                raise PluginError("--as-group needs --as: the API server impersonates a user")
            self._cluster = Cluster(
                api_client(
                    args.kubeconfig,
                    args.context,
                    user=getattr(args, "as_user", None),
                    groups=groups,
                )
            )
        return self._cluster

    @property
    def namespace(self) -> str:
        """``-n``, else the kubeconfig context's namespace, else ``default`` (kubectl's rule)."""
        explicit: str | None = self.args.namespace
        if explicit:
            return explicit
        return context_namespace(self.args.kubeconfig, self.args.context) or DEFAULT_NAMESPACE

    def dry_run(self) -> DryRun:
        """The dry run asked for; the bare flag warns, and keeps printing the manifest as YAML."""
        mode = DryRun(getattr(self.args, "dry_run", None) or DryRun.NONE)
        if mode != DryRun.BARE:
            return mode
        warn(
            "--dry-run alone is deprecated: use --dry-run=client (with -o yaml to see the manifest)"
        )
        if self.output.human:
            self.output = dataclasses.replace(self.output, format=Format.YAML)
        return DryRun.CLIENT


def _announce(env: Env, kind: Kind, made: Body, verb: str) -> None:
    """``<kind>.<group>/<name> <verb>`` for people, the name alone for ``-o name``."""
    if env.output.human:
        env.output.line(f"{resource_name(made)} {verb}")
    elif env.output.format == Format.NAME:
        sys.stdout.write(resource_name(made) + "\n")
        sys.stdout.flush()


def send(env: Env, bodies: list[Body], *, apply: bool = False) -> int:
    """Create (or apply) each body, then follow them one after another unless ``--no-watch``."""
    mode = env.dry_run()
    made: list[tuple[Kind, Body]] = []
    refused = EXIT_OK
    for body in bodies:
        kind = kind_of(body)
        if mode == DryRun.CLIENT:
            # Nothing is sent, so no kubeconfig is read: the namespace is -n's or the body's.
            if env.args.namespace:
                manifest.place(body, env.args.namespace, explicit=True)
            made.append((kind, body))
            _announce(env, kind, body, f"{'applied' if apply else 'created'} (dry run)")
            continue
        namespace = manifest.place(body, env.namespace, explicit=bool(env.args.namespace))
        server_dry_run = mode == DryRun.SERVER
        try:
            if apply:
                result, verb = env.cluster.apply(kind, namespace, body, dry_run=server_dry_run)
            else:
                result = env.cluster.create(kind, namespace, body, dry_run=server_dry_run)
                verb = "created"
        except PluginError as error:
            if len(bodies) == 1:
                raise
            # As kubectl: the others of the file still go; this one's error, and its code, stay.
            output.error(str(error))
            refused = max(refused, error.exit_code)
            continue
        made.append((kind, result))
        _announce(env, kind, result, verb + (" (server dry run)" if server_dry_run else ""))
    if mode != DryRun.NONE or getattr(env.args, "no_watch", False) or not made:
        if env.output.structured and made:
            env.output.objects([b for _, b in made], single=len(made) == 1)
        return refused
    return max(follow_all(env, made), refused)


def follow_all(env: Env, made: list[tuple[Kind, Body]]) -> int:
    """Follow each object to its end, in turn; the worst exit code, the finals for scripts."""
    code, finals = EXIT_OK, []
    for kind, body in made:
        metadata = body["metadata"]
        one, final = watch(
            env.cluster, metadata["namespace"], metadata["name"], env.output, kind=kind
        )
        if final is None:
            return one if one else EXIT_INTERRUPTED
        code = max(code, one)
        finals.append(final)
    if env.output.structured:
        env.output.objects(finals, single=len(finals) == 1)
    return code
