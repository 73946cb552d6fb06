"""What each ``kubectl ferry`` command does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry_api import InvalidResourceError
from ferry_api.checkpoint import parse_container_checkpoint
from ferry_api.diagnostics import FailureLogs
from ferry_api.migration import ContainerMigration, parse_container_migration
from ferry_api.nodehelper import NodeHelper, parse_node_helper

from ferry_kubectl import drain, logs, manifest, render
from ferry_kubectl.errors import PluginError
from ferry_kubectl.kube import (
    CHECKPOINT,
    MIGRATION,
    NODE_HELPER,
    POD_MIGRATION,
    RESTORE,
    Cluster,
    Kind,
    api_client,
    context_namespace,
)
from ferry_kubectl.output import Output, print_json
from ferry_kubectl.watch import watch

DEFAULT_NAMESPACE = "default"
LOG_KINDS = {"migration": MIGRATION, "checkpoint": CHECKPOINT, "restore": RESTORE}


@dataclass
class Env:
    """One invocation: its arguments, where it prints, and (made on first use) its cluster."""

    args: argparse.Namespace
    output: Output
    _cluster: Cluster | None = field(default=None, init=False)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster(api_client(self.args.kubeconfig, self.args.context))
        return self._cluster

    @property
    def namespace(self) -> str:
        """``-n``, else the kubeconfig context's namespace, else ``default`` (kubectl's rule)."""
        explicit: str | None = self.args.namespace
        if explicit:
            return explicit
        return context_namespace(self.args.kubeconfig, self.args.context) or DEFAULT_NAMESPACE


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _created(env: Env, bodies: list[dict[str, Any]], *, kind: Kind = MIGRATION) -> int:
    """Create each migration; then watch them one after another unless --no-watch."""
    created = []
    for body in bodies:
        namespace = manifest.place(body, env.namespace, explicit=bool(env.args.namespace))
        made = env.cluster.create(kind, namespace, body)
        created.append(made)
        if not env.output.json:
            env.output.line(f"{kind.resource_name(made['metadata']['name'])} created")
    if env.args.no_watch:
        if env.output.json:
            print_json(created[0] if len(created) == 1 else created)
        return 0
    code, finals = 0, []
    for made in created:
        metadata = made["metadata"]
        code_one, final = watch(
            env.cluster, metadata["namespace"], metadata["name"], env.output, kind=kind
        )
        if final is None:
            return code_one
        code = max(code, code_one)
        finals.append(final)
    if env.output.json:
        print_json(finals[0] if len(finals) == 1 else finals)
    return code


#: ``migrate`` options that only a container's migration has.
CONTAINER_ONLY = (
    "source",
    "leave_running",
    "tcp_established",
    "file_locks",
    "keep_checkpoint",
    "compression",
    "runtime",
    "memory_transfer",
    "no_page_server_tls",
)


def migrate_pod(env: Env, pod: str) -> int:
    """``migrate pod/NAME [--to NODE]``: a PodMigration, created and followed."""
    args = env.args
    given = [o for o in CONTAINER_ONLY if getattr(args, o, None)]
    if given:
        flags = ", ".join("--" + o.replace("_", "-").replace("source", "from") for o in given)
        raise PluginError(f"{flags}: not for a pod (a pod moves whole from the node it runs on)")
    body = manifest.pod_migration(
        pod,
        target=args.target,
        name=args.name,
        timeout=args.timeout,
        ttl=args.ttl,
        namespace=args.namespace,
    )
    if args.dry_run:
        print(manifest.dump([body], output="json" if env.output.json else "yaml"))
        return 0
    return _created(env, [body], kind=POD_MIGRATION)


def migrate(env: Env) -> int:
    args = env.args
    if args.filename:
        return apply(env)
    if args.container and args.container.startswith(("pod/", "pods/")):
        return migrate_pod(env, args.container.split("/", 1)[1])
    if not args.container or not args.source:
        raise PluginError("migrate needs CONTAINER and --from NODE (or -f FILE)")
    flags = manifest.MigrateFlags(
        container=args.container,
        source=args.source,
        target=args.target,
        name=args.name,
        leave_running=args.leave_running,
        tcp_established=args.tcp_established,
        file_locks=args.file_locks,
        keep_checkpoint=args.keep_checkpoint,
        compression=args.compression,
        runtime=args.runtime,
        memory_transfer=args.memory_transfer,
        page_server_tls=not args.no_page_server_tls,
        timeout=args.timeout,
        ttl=args.ttl,
    )
    body = manifest.from_flags(flags, args.namespace)
    if args.dry_run:
        print(manifest.dump([body], output="json" if env.output.json else "yaml"))
        return 0
    return _created(env, [body])


def apply(env: Env) -> int:
    source = env.args.filename
    if source == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            text = Path(source).read_text()
        except OSError as error:
            raise PluginError(f"cannot read {source}: {error.strerror}") from error
    bodies = manifest.load(text, source=source)
    if env.args.dry_run:
        if env.args.namespace:
            for body in bodies:
                manifest.place(body, env.args.namespace, explicit=True)
        print(manifest.dump(bodies, output="json" if env.output.json else "yaml"))
        return 0
    return _created(env, bodies)


def watch_command(env: Env) -> int:
    name, kind = env.args.name, MIGRATION
    if name.startswith(f"{POD_MIGRATION.singular}/"):
        name, kind = name.split("/", 1)[1], POD_MIGRATION
    code, final = watch(env.cluster, env.namespace, name, env.output, kind=kind)
    if env.output.json and final is not None:
        print_json(final)
    return code


def nodes(env: Env) -> int:
    helpers: list[NodeHelper] = []
    for body in env.cluster.list(NODE_HELPER, None):
        try:
            helpers.append(parse_node_helper(body))
        except InvalidResourceError as error:
            warn(f"skipping {error}")
    helpers.sort(key=render.node_name)
    if env.output.json:
        print_json([render.node_json(h) for h in helpers])
    elif not helpers:
        env.output.line("No NodeHelpers found: is Ferry's node-helper running on the nodes?")
    else:
        env.output.table(render.NODE_HEADERS, [render.node_cells(h) for h in helpers])
    return 0


def inspect(env: Env) -> int:
    body = env.cluster.get(CHECKPOINT, env.args.name, env.namespace)
    if env.output.json:
        print_json(body.get("status") or {})
        return 0
    env.output.pairs(render.checkpoint_rows(parse_container_checkpoint(body)))
    return 0


def list_migrations(env: Env) -> int:
    everywhere = bool(env.args.all_namespaces)
    migrations: list[ContainerMigration] = []
    for body in env.cluster.list(MIGRATION, None if everywhere else env.namespace):
        try:
            migrations.append(parse_container_migration(body))
        except InvalidResourceError as error:
            warn(f"skipping {error}")
    migrations.sort(key=lambda m: (m.metadata.namespace or "", m.metadata.name))
    if env.output.json:
        print_json([render.migration_json(m) for m in migrations])
    elif not migrations:
        where = "" if everywhere else f' in namespace "{env.namespace}"'
        env.output.line(f"No ContainerMigrations found{where}.")
    else:
        now = datetime.now(UTC)
        env.output.table(
            render.migration_headers(everywhere),
            [render.migration_cells(m, now, everywhere) for m in migrations],
        )
    return 0


def _logs_of(env: Env, kind: Kind, name: str) -> tuple[FailureLogs, dict[str, bytes]]:
    namespace = env.namespace
    body = env.cluster.get(kind, name, namespace)
    phase, where = logs.failure_logs(env.args.kind, body)
    if where is None:
        raise PluginError(f"the {env.args.kind} {name} has no failure logs: it is {phase}")
    config_map = env.cluster.config_map(where.config_map, namespace)
    if config_map is None:
        raise PluginError(
            f'configmap "{where.config_map}" holding the logs of the {env.args.kind} {name} '
            f'is gone from namespace "{namespace}" (the helpers on {", ".join(where.nodes)} '
            "keep a copy for a while)"
        )
    return where, logs.select(logs.decode(config_map), env.args.file)


def logs_command(env: Env) -> int:
    kind = LOG_KINDS[env.args.kind]
    where, files = _logs_of(env, kind, env.args.name)
    if where.truncated:
        warn("a log was cut to its tail to fit the ConfigMap")
    if env.args.output_dir:
        for path in logs.write(files, Path(env.args.output_dir)):
            env.output.line(f"wrote {path} ({render.size(path.stat().st_size)})")
    elif env.output.json:
        print_json(
            {file: content.decode("utf-8", errors="replace") for file, content in files.items()}
        )
    else:
        sys.stdout.write(logs.as_text(files))
        sys.stdout.flush()
    return 0


def drain_command(env: Env) -> int:
    """Evacuate a node: create its NodeEvacuation (or find it) and follow it to its end."""
    args = env.args
    body = drain.manifest(
        args.node,
        name=args.name,
        max_parallel=args.max_parallel,
        cordon=not args.no_cordon,
        timeout=args.timeout,
    )
    name = body["metadata"]["name"]
    if args.dry_run:
        print(manifest.dump([body], output="json" if env.output.json else "yaml"))
        return 0
    existing = {e["metadata"]["name"]: e for e in env.cluster.list(drain.EVACUATION, None)}
    if name in existing:
        if existing[name]["spec"]["nodeName"] != args.node:
            raise PluginError(
                f"{drain.EVACUATION.describe(name, None)} evacuates "
                f"{existing[name]['spec']['nodeName']}, not {args.node}: pick another --name"
            )
        env.output.line(f"{drain.EVACUATION.resource_name(name)} exists: following it")
    else:
        env.cluster.create(drain.EVACUATION, "", body)
        env.output.line(f"{drain.EVACUATION.resource_name(name)} created")
    if args.no_watch:
        return 0
    try:
        final = drain.follow(lambda: env.cluster.get(drain.EVACUATION, name, ""), env.output)
    except KeyboardInterrupt:
        warn(
            f"stopped following; the evacuation goes on (kubectl ferry drain {args.node} "
            "follows it again)"
        )
        raise
    if env.output.json:
        print_json(final.get("status") or {})
    return 0 if (final.get("status") or {}).get("phase") == "Succeeded" else 1


def policies(env: Env) -> int:
    found = sorted(env.cluster.list(drain.POLICY, None), key=lambda p: p["metadata"]["name"])
    drain.print_policies(found, env.output)
    return 0
