"""The docker driver's pure parts: what docker prints, what recreating a container takes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ferry_helper.drivers import docker_archive as dd
from ferry_helper.drivers.docker import DockerDriver

INSPECTED = {
    "Id": "a" * 64,
    "Name": "/web",
    "Image": "sha256:" + "b" * 64,
    "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 4242},
    "Config": {
        "Image": "localhost/ferry/busybox:latest",
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["while true; do sleep 1; done"],
        "Env": ["PATH=/bin", "MODE=prod"],
        "WorkingDir": "/srv",
        "User": "1000",
        "Labels": {"ferry.dev/namespace": "apps"},
        "Tty": False,
    },
    "HostConfig": {
        "NetworkMode": "host",
        "Binds": ["/srv/data:/data:ro"],
        "Tmpfs": {"/run": "size=1m"},
    },
    "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/var/lib/docker/overlay2/x/diff"}},
}


def test_an_inspected_container_reads_as_the_drivers_share_it() -> None:
    info = dd.container_info(INSPECTED)
    assert (info.id, info.name, info.image_id) == ("a" * 64, "web", "b" * 64)
    assert (info.running, info.pid, info.state) == (True, 4242, "running")
    assert info.labels == {"ferry.dev/namespace": "apps"}
    paused = {**INSPECTED, "State": {"Status": "running", "Running": True, "Paused": True}}
    assert dd.container_info(paused).running is False, "a paused container is frozen"
    assert dd.upper_dir(INSPECTED) == Path("/var/lib/docker/overlay2/x/diff")
    assert dd.upper_dir({"GraphDriver": {"Name": "vfs", "Data": None}}) is None


def test_a_container_is_recreated_with_what_its_process_expects() -> None:
    config = dd.recreation(INSPECTED)
    args = dd.create_args(config, name="web", criu_config=Path("/stage/criu.conf"))
    assert args[:5] == [
        "create",
        "--name",
        "web",
        "--annotation",
        "org.criu.config=/stage/criu.conf",
    ]
    joined = " ".join(args)
    for flag in (
        "--network host",
        "--env MODE=prod",
        "--workdir /srv",
        "--user 1000",
        "--label ferry.dev/namespace=apps",
        "--volume /srv/data:/data:ro",
        "--tmpfs /run:size=1m",
    ):
        assert flag in joined, flag
    # By image ID (the very image the checkpoint was made on), the entrypoint split as
    # docker create wants it: its first word, the rest before the command.
    image_at = args.index("sha256:" + "b" * 64)
    assert args[image_at - 2 : image_at] == ["--entrypoint", "/bin/sh"]
    assert args[image_at + 1 :] == ["-c", "while true; do sleep 1; done"]


def test_criu_options_and_log_file_go_into_a_config_marked_as_ours() -> None:
    text = dd.criu_config(tcp_established=True, file_locks=False, log_file=Path("/s/dump.log"))
    assert text.splitlines() == [dd.OURS, "log-file /s/dump.log", "tcp-established"]


def test_what_docker_says_is_read() -> None:
    digest = "sha256:" + "c" * 64
    stale = (
        "Error response from daemon: failed to upload checkpoint to containerd: commit failed: "
        f"content {digest}: already exists"
    )
    assert dd.stale_upload(stale) == digest
    assert dd.stale_upload("Error: criu failed") is None
    dump = (
        "Error response from daemon: Cannot checkpoint container web: runc did not terminate "
        "successfully: exit status 1: criu failed: type NOTIFY errno 0 path= "
        "/run/containerd/io.containerd.runtime.v2.task/moby/abc/criu-dump.log: unknown"
    )
    assert dd.criu_log_named(dump) == Path(
        "/run/containerd/io.containerd.runtime.v2.task/moby/abc/criu-dump.log"
    )
    assert dd.parse_loaded("Loaded image: localhost/ferry/busybox:latest\n") == (
        "localhost/ferry/busybox:latest"
    )
    assert dd.parse_loaded("Loaded image ID: sha256:" + "d" * 64) == "sha256:" + "d" * 64
    assert dd.is_no_such_container("Error: No such container: web")


def test_a_writable_layer_travels_with_its_deletions(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "var").mkdir(parents=True)
    (upper / "var" / "note").write_text("kept")
    (upper / "etc").mkdir()
    os.mknod(upper / "etc" / "motd", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # a whiteout
    packed = tmp_path / "diff.tar"
    deleted = dd.pack_upper(upper, packed)
    assert deleted == ["etc/motd"]
    target = tmp_path / "target"
    target.mkdir()
    dd.unpack_upper(packed, deleted, target)
    assert (target / "var" / "note").read_text() == "kept"
    whiteout = (target / "etc" / "motd").lstat()
    assert stat.S_ISCHR(whiteout.st_mode)
    assert whiteout.st_rdev == 0
    assert dd.pack_upper(None, tmp_path / "empty.tar") == [], "no overlay2: an empty layer"


def test_a_runc_conf_left_by_a_dead_helper_is_removed_and_a_users_kept(tmp_path: Path) -> None:
    ours = tmp_path / "ours.conf"
    ours.write_text(dd.criu_config(tcp_established=False, file_locks=True, log_file=tmp_path))
    DockerDriver(runc_conf=ours)
    assert not ours.exists()
    theirs = tmp_path / "theirs.conf"
    theirs.write_text("tcp-established\n")
    DockerDriver(runc_conf=theirs)
    assert theirs.read_text() == "tcp-established\n"
