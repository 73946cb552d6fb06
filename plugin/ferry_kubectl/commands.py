"""What each reading or migrating ``kubectl ferry`` command does, once its arguments are parsed.

``checkpoint``, ``restore``, ``cancel``, ``drain`` and ``version`` are in
:mod:`.actions`; what every maker shares (the dry run, create or apply, follow)
in :mod:`.session`.
"""

from __future__ import annotations

import sys
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
from ferry_kubectl.kinds import (
    CHECKPOINT,
    FOLLOWED,
    MIGRATION,
    NODE_HELPER,
    POLICY,
    RESTORE,
    Kind,
    reference,
)
from ferry_kubectl.output import Format, print_structured
from ferry_kubectl.session import Env, send, warn
from ferry_kubectl.watch import watch

LOG_KINDS = {"migration": MIGRATION, "checkpoint": CHECKPOINT, "restore": RESTORE}
Body = dict[str, Any]

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
    return send(env, [body])


def migrate(env: Env) -> int:
    args = env.args
    if args.filename:
        return send(env, read_manifests(args.filename))
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
    return send(env, [manifest.from_flags(flags, args.namespace)])


def read_manifests(source: str) -> list[Body]:
    """The resources of a file (``-`` for stdin), each checked against its model."""
    if source == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            text = Path(source).read_text()
        except OSError as error:
            raise PluginError(f"cannot read {source}: {error.strerror}") from error
    return manifest.load(text, source=source)


def apply(env: Env) -> int:
    """Server-side apply a file's resources: applying it again changes (and starts) nothing."""
    bodies = read_manifests(env.args.filename)
    for body in bodies:
        if not body["metadata"].get("name"):
            raise PluginError(
                f"{env.args.filename}: {body['kind']} {body['metadata']['generateName']}*: "
                "apply needs metadata.name (applying a generateName twice would make two); "
                "kubectl ferry migrate -f creates it instead"
            )
    return send(env, bodies, apply=True)


def watch_command(env: Env) -> int:
    kind, name = reference(env.args.name, among=FOLLOWED)
    code, final = watch(env.cluster, env.namespace, name, env.output, kind=kind)
    if final is not None:
        env.output.objects([final], single=True)
    return code


def _parsed(bodies: list[Body], parse: Any) -> list[tuple[Body, Any]]:
    """Each body with its model; one that does not parse is skipped with a warning."""
    parsed = []
    for body in bodies:
        try:
            parsed.append((body, parse(body)))
        except InvalidResourceError as error:
            warn(f"skipping {error}")
    return parsed


def nodes(env: Env) -> int:
    found = _parsed(env.cluster.list(NODE_HELPER, None), parse_node_helper)
    found.sort(key=lambda pair: render.node_name(pair[1]))
    helpers: list[NodeHelper] = [helper for _, helper in found]
    if not env.output.human:
        env.output.objects([body for body, _ in found])
    elif not helpers:
        env.output.line("No NodeHelpers found: is Ferry's node-helper running on the nodes?")
    else:
        now = datetime.now(UTC)
        env.output.table(
            render.node_headers(env.output.wide),
            [render.node_cells(h, now, wide=env.output.wide) for h in helpers],
        )
    return 0


def inspect(env: Env) -> int:
    body = env.cluster.get(CHECKPOINT, env.args.name, env.namespace)
    if not env.output.human:
        env.output.objects([body], single=True)
        return 0
    env.output.pairs(render.checkpoint_rows(parse_container_checkpoint(body)))
    return 0


def list_migrations(env: Env) -> int:
    everywhere = bool(env.args.all_namespaces)
    bodies = env.cluster.list(
        MIGRATION, None if everywhere else env.namespace, selector=env.args.selector
    )
    found = _parsed(bodies, parse_container_migration)
    found.sort(key=lambda pair: (pair[1].metadata.namespace or "", pair[1].metadata.name))
    migrations: list[ContainerMigration] = [m for _, m in found]
    if not env.output.human:
        env.output.objects([body for body, _ in found])
    elif not migrations:
        where = "" if everywhere else f' in namespace "{env.namespace}"'
        matching = f" matching {env.args.selector}" if env.args.selector else ""
        env.output.line(f"No ContainerMigrations found{where}{matching}.")
    else:
        now = datetime.now(UTC)
        wide = env.output.wide
        env.output.table(
            render.migration_headers(everywhere, wide=wide),
            [render.migration_cells(m, now, everywhere, wide=wide) for m in migrations],
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
    """The logs as text; ``-o json|yaml`` a map of file to text, ``-o name`` the file names."""
    kind = LOG_KINDS[env.args.kind]
    where, files = _logs_of(env, kind, env.args.name)
    if where.truncated:
        warn("a log was cut to its tail to fit the ConfigMap")
    if env.args.output_dir:
        for path in logs.write(files, Path(env.args.output_dir)):
            env.output.line(f"wrote {path} ({render.size(path.stat().st_size)})")
    elif env.output.structured:
        print_structured(
            {file: content.decode("utf-8", errors="replace") for file, content in files.items()},
            env.output.format,
        )
    elif env.output.format == Format.NAME:
        sys.stdout.write("".join(f"{file}\n" for file in files))
    else:
        sys.stdout.write(logs.as_text(files))
    sys.stdout.flush()
    return 0


def policies(env: Env) -> int:
    found = sorted(env.cluster.list(POLICY, None), key=lambda p: p["metadata"]["name"])
    if not env.output.human:
        env.output.objects(found)
    else:
        drain.print_policies(found, env.output)
    return 0
