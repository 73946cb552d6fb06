"""``checkpoint``, ``restore``, ``cancel``, ``drain`` and ``version``.

``cancel`` deletes a migration in flight: the operator's finalizer holds it
while the operator rolls it back (the workload stays on its source), then it
ends ``Cancelled`` and is gone. The command follows it until it is final or
gone and says which: 0 when it was cancelled, 1 when it had ended otherwise
(it finished before the cancel reached it).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from ferry_kubectl import drain, manifest, render
from ferry_kubectl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PluginError
from ferry_kubectl.follow import follow
from ferry_kubectl.kinds import CANCELLABLE, EVACUATION, Kind, reference
from ferry_kubectl.output import Format, print_structured
from ferry_kubectl.session import DRY_RUN_SUFFIX, DryRun, Env, send, warn
from ferry_kubectl.watch import interrupted, named

Body = dict[str, Any]
DISTRIBUTION = "kubectl-ferry"


def checkpoint(env: Env) -> int:
    args = env.args
    flags = manifest.CheckpointFlags(
        container=args.container,
        node=args.node,
        name=args.name,
        stop=args.stop,
        tcp_established=args.tcp_established,
        file_locks=args.file_locks,
        compression=args.compression,
        runtime=args.runtime,
        registry=args.registry,
    )
    return send(env, [manifest.checkpoint(flags, args.namespace)])


def restore(env: Env) -> int:
    args = env.args
    flags = manifest.RestoreFlags(
        checkpoint=args.checkpoint,
        node=args.node,
        name=args.name,
        container_name=args.container_name,
        tcp_established=args.tcp_established,
        file_locks=args.file_locks,
        timeout=args.timeout,
        ttl=args.ttl,
    )
    return send(env, [manifest.restore(flags, args.namespace)])


def _phase(body: Body | None) -> str | None:
    return ((body or {}).get("status") or {}).get("phase")


def cancel(env: Env) -> int:
    """Delete a migration in flight, then follow its rollback until it is final or gone."""
    kind, name = reference(env.args.name, among=CANCELLABLE)
    namespace = env.namespace
    body = env.cluster.get(kind, name, namespace)
    phase = _phase(body)
    if kind.is_final(body):
        raise PluginError(
            f"{kind.describe(name, namespace)} already ended {phase}: nothing to cancel "
            f"(`kubectl delete {kind.singular} {name}{render.namespaced_flag(namespace)}` "
            "removes the record)"
        )
    if body["metadata"].get("deletionTimestamp"):
        message = f"{kind.resource_name(name)} is being cancelled already (phase {phase})"
    else:
        env.cluster.delete(kind, name, namespace)
        message = f"{kind.resource_name(name)} cancelled in phase {phase or 'Pending'}"
    if env.output.human:
        env.output.line(message)
    elif env.output.format == Format.NAME:
        print(kind.resource_name(name))
    if env.args.no_watch:
        return EXIT_OK
    return _follow_cancel(env, kind, name, namespace, body)


def _follow_cancel(env: Env, kind: Kind, name: str, namespace: str, body: Body) -> int:
    gone: list[Body | None] = []
    states = follow(
        lambda: env.cluster.list_one(kind, name, namespace),
        lambda version: env.cluster.watch_one(kind, name, namespace, version),
        is_final=kind.is_final,
        what=kind.describe(name, namespace),
        on_gone=gone.append,
    )
    last, shown = body, _phase(body)
    try:
        for state in states:
            last = state
            if env.output.human and _phase(state) not in (None, shown):
                shown = _phase(state)
                env.output.line(f"  {shown}")
    except KeyboardInterrupt:
        env.output.line("")
        warn(interrupted(kind, name, namespace).replace("keeps running", "is rolling back"))
        return EXIT_INTERRUPTED
    if gone and gone[0] is not None:
        last = gone[0]
    final = _phase(last)
    if env.output.structured:
        print_structured(last, env.output.format)
    elif env.output.human:
        env.output.line(cancel_outcome(final, gone=bool(gone), name=named(kind, name)))
    return EXIT_FAILED if final in ("Succeeded", "Failed") else EXIT_OK


def cancel_outcome(phase: str | None, *, gone: bool, name: str) -> str:
    """The last line of a cancel: what the migration came to."""
    if phase == "Cancelled":
        return f"Cancelled: {name} rolled back; the workload runs on its source node"
    if phase in ("Succeeded", "Failed"):
        return f"{phase}: {name} ended before the cancel reached it; its record is deleted"
    if gone:
        return f"Cancelled: {name} was deleted before it started; nothing had moved"
    return f"{name}: {phase or 'no phase'}"


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
    mode = env.dry_run()
    if mode != DryRun.NONE:
        made = (
            body
            if mode == DryRun.CLIENT
            else env.cluster.create(EVACUATION, "", body, dry_run=True)
        )
        _said(env, f"{EVACUATION.resource_name(name)} created{DRY_RUN_SUFFIX[mode]}", name)
        env.output.objects([made], single=True)
        return EXIT_OK
    existing = env.cluster.find(EVACUATION, name, "")
    if existing is not None:
        if existing["spec"]["nodeName"] != args.node:
            raise PluginError(
                f"{EVACUATION.describe(name, None)} evacuates "
                f"{existing['spec']['nodeName']}, not {args.node}: pick another --name"
            )
        _said(env, f"{EVACUATION.resource_name(name)} exists: following it", name)
    else:
        env.cluster.create(EVACUATION, "", body)
        _said(env, f"{EVACUATION.resource_name(name)} created", name)
    if args.no_watch:
        return EXIT_OK
    try:
        shown = env.output if env.output.human else None
        final = drain.follow(lambda: env.cluster.get(EVACUATION, name, ""), shown)
    except KeyboardInterrupt:
        warn(
            f"stopped following; the evacuation goes on (kubectl ferry drain {args.node} "
            "follows it again)"
        )
        raise
    if env.output.structured:
        env.output.objects([final], single=True)
    return EXIT_OK if EVACUATION.succeeded(final) else EXIT_FAILED


def _said(env: Env, line: str, name: str) -> None:
    """``line`` for people; the NodeEvacuation's name for ``-o name``."""
    if env.output.human:
        env.output.line(line)
    elif env.output.format == Format.NAME:
        print(EVACUATION.resource_name(name))


def operator_versions(env: Env) -> list[Body]:
    """Each operator Deployment: its namespace, name, image and version; or why none is known."""
    found = []
    for deployment in env.cluster.operator_deployments():
        meta = deployment["metadata"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        image = str(container.get("image", ""))
        label = (meta.get("labels") or {}).get("app.kubernetes.io/version")
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
        found.append(
            {
                "namespace": meta["namespace"],
                "name": meta["name"],
                "image": image,
                "version": label or tag or "unknown",
                "ready": f"{(deployment.get('status') or {}).get('readyReplicas') or 0}"
                f"/{deployment['spec'].get('replicas', 1)}",
            }
        )
    return found


def version(env: Env) -> int:
    """The plugin's version; unless --client, the API server's and the operator's."""
    if env.output.format in (Format.NAME, Format.WIDE):
        raise PluginError("version: -o must be text, json or yaml")
    report: Body = {
        "clientVersion": {"plugin": DISTRIBUTION, "version": metadata.version(DISTRIBUTION)}
    }
    if env.output.human:  # first, as kubectl does: it stands even when the server cannot answer
        env.output.line(f"Client Version: {DISTRIBUTION} {report['clientVersion']['version']}")
    if not env.args.client:
        report["serverVersion"] = env.cluster.server_version()
        try:
            report["operator"] = operator_versions(env)
        except PluginError as error:
            report["operatorError"] = str(error)
    if env.output.structured:
        print_structured(report, env.output.format)
        return EXIT_OK
    lines = []
    if "serverVersion" in report:
        lines.append(f"Server Version: {report['serverVersion'].get('gitVersion', 'unknown')}")
        operators = report.get("operator") or []
        for op in operators:
            lines.append(
                f"Operator Version: {op['version']} ({op['image']}, deployment "
                f"{op['namespace']}/{op['name']}, {op['ready']} ready)"
            )
        if "operatorError" in report:
            lines.append(f"Operator Version: unknown ({report['operatorError']})")
        elif not operators:
            lines.append("Operator Version: not found (no Deployment runs ferry-operator)")
    for line in lines:
        env.output.line(line)
    return EXIT_OK
