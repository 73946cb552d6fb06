"""``ferry-cluster``: a local Kubernetes control plane and simulated nodes from real parts.

ferry-cluster up [--nodes N]        build (once) and start; idempotent
ferry-cluster down                  stop and remove everything, verified
ferry-cluster status                what runs, where
ferry-cluster kubeconfig [--service-account NS/NAME]
ferry-cluster exec NODE -- CMD...   run a command inside a node
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import cluster, deploy, imagebuild, images, kubenode, nodes
from .config import DEFAULT_NAME, MAX_NODES, ClusterConfig


def _progress(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _config(args: argparse.Namespace, *, nodes_count: int | None = None) -> ClusterConfig:
    base = ClusterConfig(name=args.name)
    if nodes_count is None:
        return cluster.recorded(base)
    return ClusterConfig(name=args.name, nodes=nodes_count)


def cmd_up(args: argparse.Namespace) -> int:
    config = _config(args, nodes_count=args.nodes)
    result = cluster.up(config, _progress)
    _print_status(result)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    config = _config(args)
    rootfs = cluster.ensure_layers(config, _progress)[-1]
    print(rootfs)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster.down(_config(args), _progress)
    return 0


def _print_status(result: cluster.Status) -> None:
    state = "ready" if result.apiserver_ready else "not running"
    print(f"cluster     {result.name}")
    print(f"apiserver   {result.server} ({state})")
    print(f"kubeconfig  {result.kubeconfig}")
    for node in result.nodes:
        print(
            f"node        {node.name:8} {node.address:14} {'running' if node.running else 'down'}"
        )


def cmd_status(args: argparse.Namespace) -> int:
    result = cluster.status(_config(args))
    if args.output == "json":
        print(
            json.dumps(
                {
                    "name": result.name,
                    "apiserverReady": result.apiserver_ready,
                    "server": result.server,
                    "kubeconfig": str(result.kubeconfig),
                    "nodes": [
                        {"name": n.name, "address": n.address, "running": n.running}
                        for n in result.nodes
                    ],
                },
                indent=2,
            )
        )
    else:
        _print_status(result)
    return 0 if result.healthy else 1


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    config = _config(args)
    if not config.admin_kubeconfig.exists():
        print(f"cluster {config.name} is not up (run `ferry-cluster up`)", file=sys.stderr)
        return 1
    if not args.service_account:
        print(config.admin_kubeconfig)
        return 0
    namespace, _, name = args.service_account.partition("/")
    if not namespace or not name:
        print("--service-account takes NAMESPACE/NAME", file=sys.stderr)
        return 2
    out = (
        Path(args.output) if args.output else config.state_dir / f"sa-{namespace}-{name}.kubeconfig"
    )
    print(
        cluster.service_account_kubeconfig(
            config, namespace=namespace, name=name, seconds=args.duration, out=out
        )
    )
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    layer = images.layer_from_tree(Path(args.root))
    archive = images.write_docker_archive(
        Path(args.output), layer=layer, reference=args.tag, cmd=args.cmd or ["/bin/sh"]
    )
    print(f"{archive.path} {archive.reference} sha256:{archive.image_id}")
    return 0


def cmd_image_ferry(args: argparse.Namespace) -> int:
    config = _config(args)
    node = config.node_specs()[0]
    for built in imagebuild.build(config, node, log=_progress):
        print(f"{built.archive} {built.reference}")
    return 0


def cmd_image_load(args: argparse.Namespace) -> int:
    config = _config(args)
    for node in config.node_specs():
        _progress(f"loading {args.archive} on {node.name}")
        cluster.load_image(node, Path(args.archive), docker=args.docker)
        if args.pods:
            kubenode.import_image(node, Path(args.archive))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    config = _config(args)
    _progress(f"deploying Ferry on cluster {config.name}")
    deploy.deploy(config, allow_any_namespace=args.allow_any_namespace)
    _progress("operator and node-helpers running; `kubectl get pods -n ferry-system -o wide`")
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    config = _config(args)
    _progress(f"uninstalling Ferry from cluster {config.name} (pre-delete hook, helm uninstall)")
    deploy.undeploy(config)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    config = _config(args)
    specs = {n.name: n for n in config.node_specs()}
    if args.node not in specs:
        print(f"no node {args.node!r}; nodes: {', '.join(specs)}", file=sys.stderr)
        return 2
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    nodes.env_exec(specs[args.node], command or ["/bin/bash"])
    return 0  # not reached: env_exec replaces this process


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ferry-cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--name",
        default=os.environ.get("FERRY_CLUSTER", DEFAULT_NAME),
        help="cluster name, for several clusters on one host (default: %(default)s)",
    )
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="build (once) and start the cluster; idempotent")
    up.add_argument(
        "--nodes",
        type=int,
        default=2,
        choices=range(1, MAX_NODES + 1),
        help="number of simulated nodes (default: %(default)s)",
    )
    up.set_defaults(func=cmd_up)

    prep = sub.add_parser(
        "prepare", help="build and cache the binaries and node root filesystem, start nothing"
    )
    prep.set_defaults(func=cmd_prepare)

    down = sub.add_parser("down", help="stop the cluster and remove all it made")
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="show what runs; exit 1 unless healthy")
    st.add_argument("-o", "--output", choices=["text", "json"], default="text")
    st.set_defaults(func=cmd_status)

    kc = sub.add_parser(
        "kubeconfig", help="print the admin kubeconfig's path, or mint one for a ServiceAccount"
    )
    kc.add_argument("--service-account", metavar="NAMESPACE/NAME")
    kc.add_argument("--duration", type=int, default=3600, help="token lifetime in seconds")
    kc.add_argument("-o", "--output", help="where to write the ServiceAccount kubeconfig")
    kc.set_defaults(func=cmd_kubeconfig)

    img = sub.add_parser("image", help="images without a registry")
    img_sub = img.add_subparsers(dest="image_command", required=True)
    build = img_sub.add_parser(
        "build",
        help="pack a root directory as a reproducible docker-archive (same input, same image ID)",
    )
    build.add_argument("root", help="directory holding the image's root filesystem")
    build.add_argument("--tag", required=True, help="e.g. localhost/ferry/redis:latest")
    build.add_argument("--output", required=True, help="archive to write")
    build.add_argument("--cmd", nargs="+", help="the image's command (default: /bin/sh)")
    build.set_defaults(func=cmd_image_build)
    ferry_images = img_sub.add_parser(
        "ferry",
        help="build the operator and node-helper images from their Containerfiles "
        "(a node's podman, no registry); prints each archive",
    )
    ferry_images.set_defaults(func=cmd_image_ferry)
    load = img_sub.add_parser("load", help="podman load an archive on every node")
    load.add_argument("archive")
    load.add_argument("--docker", action="store_true", help="docker load it too")
    load.add_argument(
        "--pods",
        action="store_true",
        help="import it into the kubelet's containerd too (pods: imagePullPolicy Never)",
    )
    load.set_defaults(func=cmd_image_load)

    dep = sub.add_parser(
        "deploy",
        help="build Ferry's images, import them into the nodes and helm install the chart "
        "(hooks included) on the running cluster",
    )
    dep.add_argument(
        "--allow-any-namespace",
        action="store_true",
        help="let any namespace migrate any container (no label needed)",
    )
    dep.set_defaults(func=cmd_deploy)

    undep = sub.add_parser(
        "undeploy", help="uninstall Ferry as helm uninstall would, hooks included"
    )
    undep.set_defaults(func=cmd_undeploy)

    ex = sub.add_parser("exec", help="run a command inside a node (default: a shell)")
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("ferry-cluster needs root (namespaces, mounts, cgroups)", file=sys.stderr)
        return 1
    try:
        code: int = args.func(args)
    except (RuntimeError, ValueError) as error:
        print(f"ferry-cluster: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
