"""What the podman driver reads from podman and CRIU, checked on captured output.

The samples are real: printed by podman 5.4.2, crun 1.21 and CRIU 4.2.1 on the
simulated nodes (IDs and paths kept, long JSON trimmed to the fields read).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import pytest
from ferry_helper.criu_stats import CriuStatistics, parse_print_stats
from ferry_helper.drivers import archives, errors, podman_parsing, records
from ferry_helper.drivers.errors import RuntimeCommandError, RuntimeCommandTimeoutError
from ferry_helper.drivers.podman import PodmanDriver
from ferry_helper.drivers.records import CheckpointOptions

CONTAINER_ID = "9066fe4df64660dec823be154e7150e46d9413608a6f19e0d9bcc1268372ddd0"
USERDATA = f"/var/lib/containers/storage/overlay-containers/{CONTAINER_ID}/userdata"

CHECKPOINT_STATS = f"""{{
    "podman_checkpoint_duration": 366680,
    "container_statistics": [
        {{
            "Id": "{CONTAINER_ID}",
            "runtime_checkpoint_duration": 195989,
            "criu_statistics": {{
                "freezing_time": 100944,
                "frozen_time": 51628,
                "memdump_time": 724,
                "memwrite_time": 154,
                "pages_scanned": 51,
                "pages_written": 35
            }}
        }}
    ]
}}
"""

RESTORE_STATS = """{
    "podman_restore_duration": 215342,
    "container_statistics": [
        {
            "Id": "56fafe8ca1b9a444611451164cb5af34a38b50cc25b4db045c9ad5ac2d07e7fa",
            "runtime_restore_duration": 135431,
            "criu_statistics": {
                "pages_compared": 9,
                "pages_skipped_cow": 2,
                "forking_time": 265,
                "restore_time": 60209,
                "pages_restored": 32
            }
        }
    ]
}
"""

FAILED_STATS = """{
    "podman_checkpoint_duration": 214026,
    "container_statistics": null
}
"""

CHECKPOINT_STDERR = (
    "CRIU checkpointing failed -52.  Please check CRIU logfile "
    f"{USERDATA}/dump.log: Invalid exchange\n"
    f"Error: `/usr/bin/crun checkpoint --image-path {USERDATA}/checkpoint --work-path "
    f"{USERDATA} {CONTAINER_ID}` failed: exit status 1\n"
)

RESTORE_STDERR = (
    "Error: OCI runtime error: crun: CRIU restoring failed -52.  Please check CRIU logfile "
    f"`{USERDATA}/restore.log`\n"
)

NAME_CONFLICT_STDERR = (
    'Error: creating container storage: the container name "c1" is already in use by '
    "f4c05672452a6963e739c660a294f3543c4620641f3815b54618949ebec34cae. You have to remove "
    "that container to be able to reuse that name: that name is already in use, or use "
    "--replace to instruct Podman to do so.\n"
)

CGROUPS_V1_WARNING = (
    "WARN[0000] Using cgroups-v1 which is deprecated in favor of cgroups-v2 with Podman v5 "
    "and will be removed in a future version. Set environment variable "
    "`PODMAN_IGNORE_CGROUPSV1_WARNING` to hide this warning.\n"
)

DUMP_LOG = """\
(00.000000) Version: 4.2.1 (gitid 0)
(00.000925) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.117618) Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore 864 with interrupted system call
(00.120554) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(00.120565) Error (criu/cr-dump.c:1545): Dump files (pid: 865) failed with -1
(00.184122) Error (criu/cr-dump.c:1975): Dumping FAILED.
"""  # noqa: E501 - CRIU's lines, verbatim

RESTORE_LOG = """\
(00.000739) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.026072) Running network-unlock scripts
iptables-restore: line 3 failed: Bad rule (does a matching rule exist in that chain?).
(00.027743) Error (criu/util.c:657): exited, status=1
(00.066767)      1: Error (criu/files-reg.c:2353): Can't open file data/x on restore: No such file or directory
(00.066769)      1: Error (criu/files-reg.c:2267): Can't open file data/x: No such file or directory
(00.066771)      1: Error (criu/files.c:1221): Unable to open fd=3 id=0x5
(00.067599) Error (criu/cr-restore.c:2331): Restoring FAILED.
(00.068823) Error (criu/cgroup.c:2055): cg: cgroupd: recv req error: No such file or directory
"""  # noqa: E501 - CRIU's lines, verbatim


def _inspect(*, running: bool, status: str, pid: int, labels: dict[str, str] | None) -> str:
    return json.dumps(
        [
            {
                "Id": CONTAINER_ID,
                "Created": "2026-11-25T17:58:38.061131415Z",
                "State": {
                    "OciVersion": "1.2.0",
                    "Status": status,
                    "Running": running,
                    "Paused": False,
                    "Pid": pid,
                    "ConmonPid": 187,
                    "ExitCode": 0,
                    "Checkpointed": status == "exited",
                    "CheckpointedAt": "2026-11-25T17:58:43.547719338Z",
                },
                "Image": "7f99548b66b75fa1d9cf8384e8fba133fe9957bafdecda6ac8b782e4680f5081",
                "ImageName": "localhost/ferry/busybox:latest",
                "Name": "c1",
                "OCIRuntime": "crun",
                "StaticDir": USERDATA,
                "Config": {"Hostname": "9066fe4df646", "Labels": labels},
            }
        ],
        indent=5,
    )


# --- --print-stats


def test_checkpoint_statistics() -> None:
    container_id, stats = parse_print_stats(CHECKPOINT_STATS)
    assert container_id == CONTAINER_ID
    assert stats.frozen_time == 51628
    assert stats.pages_written == 35
    assert stats.restore_time is None
    assert stats.as_dict() == {
        "freezing_time": 100944,
        "frozen_time": 51628,
        "memdump_time": 724,
        "memwrite_time": 154,
        "pages_scanned": 51,
        "pages_written": 35,
        "podman_duration": 366680,
        "runtime_duration": 195989,
    }


def test_restore_statistics() -> None:
    container_id, stats = parse_print_stats(RESTORE_STATS)
    assert container_id == "56fafe8ca1b9a444611451164cb5af34a38b50cc25b4db045c9ad5ac2d07e7fa"
    assert (stats.restore_time, stats.forking_time, stats.pages_restored) == (60209, 265, 32)
    assert (stats.podman_duration, stats.runtime_duration) == (215342, 135431)
    assert stats.frozen_time is None


def test_failed_run_prints_no_container_statistics() -> None:
    container_id, stats = parse_print_stats(FAILED_STATS)
    assert container_id is None
    assert stats.as_dict() == {"podman_duration": 214026}


def test_counters_criu_adds_later_are_kept() -> None:
    document = json.loads(CHECKPOINT_STATS)
    document["container_statistics"][0]["criu_statistics"]["pages_new_counter"] = 7
    document["container_statistics"][0]["criu_statistics"]["note"] = "not a counter"
    _, stats = parse_print_stats(json.dumps(document))
    assert stats.as_dict()["pages_new_counter"] == 7
    assert "note" not in stats.as_dict()


def test_entry_is_picked_by_container_id() -> None:
    document = json.loads(CHECKPOINT_STATS)
    other = {"Id": "f" * 64, "criu_statistics": {"frozen_time": 1}}
    document["container_statistics"].insert(0, other)
    text = json.dumps(document)
    assert parse_print_stats(text)[1].frozen_time == 1
    assert parse_print_stats(text, container_id=CONTAINER_ID[:12])[1].frozen_time == 51628


@pytest.mark.parametrize("text", ["", "c1\n", "{not json", "[1, 2]"])
def test_unreadable_statistics_are_empty_not_fatal(text: str) -> None:
    assert parse_print_stats(text) == (None, CriuStatistics())
    assert CriuStatistics().is_empty()


def test_statistics_behind_a_stray_line() -> None:
    assert parse_print_stats("c1\n" + CHECKPOINT_STATS)[0] == CONTAINER_ID


def test_statistics_are_frozen() -> None:
    stats = parse_print_stats(CHECKPOINT_STATS)[1]
    with pytest.raises(ValueError, match="frozen"):
        stats.frozen_time = 1  # type: ignore[misc]


# --- podman inspect, info, load


def test_running_container() -> None:
    info = podman_parsing.parse_container_inspect(
        _inspect(running=True, status="running", pid=189, labels={"ferry.dev/namespace": "a"})
    )
    assert info is not None
    assert (info.id, info.name, info.state, info.running, info.pid) == (
        CONTAINER_ID,
        "c1",
        "running",
        True,
        189,
    )
    assert info.image_id.startswith("7f99548b66b7")
    assert info.image_name == "localhost/ferry/busybox:latest"
    assert info.labels == {"ferry.dev/namespace": "a"}


def test_stopped_container_has_no_pid_nor_labels() -> None:
    # A checkpointed container: podman keeps the old pid, and `null` labels.
    info = podman_parsing.parse_container_inspect(
        _inspect(running=False, status="exited", pid=189, labels=None)
    )
    assert info is not None
    assert (info.running, info.state, info.pid, info.labels) == (False, "exited", 0, {})
    assert info.checkpointed is True
    assert info.static_dir == USERDATA


def test_inspect_of_nothing() -> None:
    assert podman_parsing.parse_container_inspect("[]") is None
    assert podman_parsing.is_no_such_container("Error: no such container nope\n")
    assert not podman_parsing.is_no_such_container(NAME_CONFLICT_STDERR)


def test_runtime_info() -> None:
    info = json.dumps(
        {
            "host": {
                "ociRuntime": {
                    "name": "crun",
                    "package": "crun_1.21-1_amd64",
                    "path": "/usr/bin/crun",
                    "version": "crun version 1.21\ncommit: 10269840aa07fb7e6b7e1acff6198692d8ff5c88"
                    "\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +CRIU",
                },
                "cgroupVersion": "v1",
            },
            "version": {"APIVersion": "5.4.2", "Version": "5.4.2", "GoVersion": "go1.24.4"},
        }
    )
    parsed = podman_parsing.parse_runtime_info(info)
    assert parsed == podman_parsing.RuntimeInfo(
        version="5.4.2", oci_runtime="crun", oci_runtime_version="1.21"
    )
    assert parsed.name == "podman"


def test_runc_version() -> None:
    text = "runc version 1.1.15\ncommit: v1.1.15-0-gbc20cb44\nspec: 1.0.2-dev\ngo: go1.22.3"
    assert podman_parsing.parse_oci_runtime_version(text) == "1.1.15"


@pytest.mark.parametrize(
    ("stdout", "refs"),
    [
        ("Loaded image: localhost/ferry/drvimg:latest\n", ["localhost/ferry/drvimg:latest"]),
        ("Loaded image(s): localhost/a:1,localhost/b:2\n", ["localhost/a:1", "localhost/b:2"]),
        (f"Loaded image: sha256:{'a' * 64}\n", [f"sha256:{'a' * 64}"]),
        ("Getting image source signatures\n", []),
    ],
)
def test_loaded_images(stdout: str, refs: list[str]) -> None:
    assert podman_parsing.parse_loaded_images(stdout) == refs


def test_image_inspect_and_references() -> None:
    image_id = "ad5d96c3a61091eabbd15479971b243050ed24a4834dc33bc5cfa4189cf02c90"
    text = json.dumps([{"Id": image_id, "RepoTags": ["localhost/ferry/drvimg:latest"]}])
    assert podman_parsing.parse_image_inspect(text) == (image_id, ["localhost/ferry/drvimg:latest"])
    assert (
        podman_parsing.parse_image_inspect(json.dumps([{"Id": image_id, "RepoTags": None}]))[1]
        == []
    )
    assert podman_parsing.is_image_id(image_id[:12], image_id)
    assert podman_parsing.is_image_id(f"sha256:{image_id}", image_id)
    assert not podman_parsing.is_image_id("localhost/ferry/drvimg:latest", image_id)


# --- argv


def test_checkpoint_argv() -> None:
    archive = Path("/tmp/c.tar.zst")
    assert podman_parsing.checkpoint_args("c1", archive, CheckpointOptions()) == [
        *("container", "checkpoint", "--export", "/tmp/c.tar.zst", "--print-stats"),
        *("--compress", "zstd", "c1"),
    ]
    options = CheckpointOptions(
        leave_running=True, tcp_established=True, file_locks=True, compression="none"
    )
    assert podman_parsing.checkpoint_args("c1", archive, options)[-5:] == [
        "none",
        "--leave-running",
        "--tcp-established",
        "--file-locks",
        "c1",
    ]


def test_restore_argv() -> None:
    archive = Path("/tmp/c.tar")
    assert podman_parsing.import_args(
        archive, name=None, tcp_established=False, file_locks=False
    ) == [
        *("container", "restore", "--import", "/tmp/c.tar", "--print-stats"),
    ]
    assert podman_parsing.import_args(archive, name="web", tcp_established=True, file_locks=True)[
        4:
    ] == [
        *("--print-stats", "--tcp-established", "--file-locks", "--name", "web"),
    ]


def test_compression_is_checked() -> None:
    with pytest.raises(ValueError, match="compression"):
        CheckpointOptions(compression="xz")  # type: ignore[arg-type]


# --- errors


def test_criu_log_path_in_both_formats() -> None:
    assert errors.criu_log_path(CHECKPOINT_STDERR) == Path(f"{USERDATA}/dump.log")
    assert errors.criu_log_path(RESTORE_STDERR) == Path(f"{USERDATA}/restore.log")
    assert errors.criu_log_path(NAME_CONFLICT_STDERR) is None
    assert podman_parsing.container_id_of_log(Path(f"{USERDATA}/restore.log")) == CONTAINER_ID
    assert podman_parsing.container_id_of_log(Path("/tmp/restore.log")) is None


def test_decisive_dump_error_skips_noise_and_summaries() -> None:
    messages = errors.criu_error_lines(DUMP_LOG.splitlines())
    assert messages[0].startswith("rlimit: Can't setup RLIMIT_NOFILE")
    assert errors.decisive_criu_error(messages) == (
        "inet: Connected TCP socket, consider using --tcp-established option."
    )


def test_decisive_restore_error_from_a_restored_task() -> None:
    messages = errors.criu_error_lines(RESTORE_LOG.splitlines())
    assert errors.decisive_criu_error(messages) == (
        "Can't open file data/x on restore: No such file or directory"
    )


def test_decisive_criu_error_when_only_summaries_or_noise() -> None:
    assert errors.decisive_criu_error(["Dumping FAILED."]) == "Dumping FAILED."
    noise = ["rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"]
    assert errors.decisive_criu_error(noise) == noise[0]
    assert errors.decisive_criu_error([]) is None


def test_read_criu_errors(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text(RESTORE_LOG)
    lines = errors.read_criu_errors(log)
    assert lines[0] == "Can't open file data/x on restore: No such file or directory"
    assert not any("RLIMIT_NOFILE" in line or line.startswith("exited") for line in lines)
    assert "Restoring FAILED." in lines
    assert errors.read_criu_errors(tmp_path / "gone.log") == []


def test_decisive_stderr_lines() -> None:
    assert errors.decisive_stderr_line(CGROUPS_V1_WARNING + NAME_CONFLICT_STDERR) == (
        NAME_CONFLICT_STDERR.removeprefix("Error: ").strip()
    )
    # The CRIU line, not the OCI runtime's command line.
    assert errors.decisive_stderr_line(CHECKPOINT_STDERR) == (
        f"CRIU checkpointing failed -52.  Please check CRIU logfile {USERDATA}/dump.log: "
        "Invalid exchange"
    )
    assert errors.decisive_stderr_line("just this\n") == "just this"
    assert errors.decisive_stderr_line(CGROUPS_V1_WARNING) is None


def test_error_from_a_criu_failure() -> None:
    command = ["podman", "container", "checkpoint", "--export", "/tmp/x", "web"]
    messages = errors.criu_error_lines(DUMP_LOG.splitlines())
    error = errors.build_error(command, 125, CHECKPOINT_STDERR, criu_errors=messages)
    assert type(error) is RuntimeCommandError
    assert (error.command, error.exit_code, error.stderr) == (command, 125, CHECKPOINT_STDERR)
    assert error.decisive_line.startswith("inet: Connected TCP socket")
    assert error.criu_log == Path(f"{USERDATA}/dump.log")
    assert str(error) == (
        "podman container checkpoint failed: inet: Connected TCP socket, consider using "
        f"--tcp-established option. (CRIU log: {USERDATA}/dump.log); to fix: the container "
        "holds established TCP connections: close them before a migration (on another node "
        "it gets another address, so they cannot follow), or, for a checkpoint restored on "
        "this same node, set spec.tcpEstablished: true (its peers then see a pause, not a "
        "reset)"
    )
    bind = errors.advice(["inet: Can't bind inet socket back: Cannot assign requested address"])
    assert bind is not None
    assert bind.startswith("the restored TCP connections need the container's old address")


def test_error_without_criu() -> None:
    error = errors.build_error(["podman", "container", "restore"], 125, NAME_CONFLICT_STDERR)
    assert error.decisive_line.startswith('creating container storage: the container name "c1"')
    assert error.criu_log is None
    assert str(error).startswith("podman container restore failed: creating container storage")
    silent = errors.build_error(["/usr/bin/podman", "rm", "--force", "x"], 2, "")
    assert str(silent) == "podman rm failed: exit code 2 and no error output"


def test_timeout_error() -> None:
    error = errors.build_error(["podman", "load"], None, "Copying blob\n", timeout=5)
    assert isinstance(error, RuntimeCommandTimeoutError)
    assert error.exit_code is None
    assert error.decisive_line == "no answer in 5s, killed; last output: Copying blob"


# --- files and cgroups


def test_file_digest_reads_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (archives.HASH_CHUNK // 256 * 2 + 3)
    path = tmp_path / "archive.tar"
    path.write_bytes(data)
    assert archives.file_digest(path) == (len(data), hashlib.sha256(data).hexdigest())


def test_stale_cgroup_dirs_children_first(tmp_path: Path) -> None:
    container = f"libpod-{CONTAINER_ID}"
    for hierarchy in ("devices", "memory"):
        (tmp_path / hierarchy / "libpod_parent" / container / ".proxy-crun").mkdir(parents=True)
    (tmp_path / "devices" / "libpod_parent" / f"libpod-{'b' * 64}").mkdir()
    (tmp_path / "unified" / "machine.slice" / f"{container}.scope").mkdir(parents=True)
    found = podman_parsing.stale_cgroup_dirs(tmp_path, CONTAINER_ID)
    relative = [str(p.relative_to(tmp_path)) for p in found]
    assert sorted(relative) == sorted(
        [
            f"devices/libpod_parent/{container}/.proxy-crun",
            f"devices/libpod_parent/{container}",
            f"memory/libpod_parent/{container}/.proxy-crun",
            f"memory/libpod_parent/{container}",
            f"unified/machine.slice/{container}.scope",
        ]
    )
    for path in found:  # rmdir in this order empties every tree
        path.rmdir()
    with pytest.raises(ValueError, match="full container ID"):
        podman_parsing.stale_cgroup_dirs(tmp_path, "../../etc")


def test_tcp_streams_in_criu_images(tmp_path: Path) -> None:
    assert not podman_parsing.holds_tcp_streams(tmp_path)
    assert not podman_parsing.holds_tcp_streams(tmp_path / "missing")
    (tmp_path / "tcp-stream-3b77e.img").write_bytes(b"")
    assert podman_parsing.holds_tcp_streams(tmp_path)


# --- the driver's process handling, with a stand-in for podman


def _fake_podman(tmp_path: Path, script: str) -> str:
    path = tmp_path / "podman"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(0o755)
    return str(path)


def test_missing_podman_is_a_podman_error(tmp_path: Path) -> None:
    driver = PodmanDriver(podman=str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeCommandError, match="cannot run"):
        asyncio.run(driver.runtime_info())


def test_slow_podman_is_killed(tmp_path: Path) -> None:
    fake = _fake_podman(
        tmp_path,
        "import sys, time\nprint('starting', file=sys.stderr, flush=True)\ntime.sleep(30)\n",
    )
    driver = PodmanDriver(podman=fake, timeout=0.5)
    with pytest.raises(RuntimeCommandTimeoutError) as caught:
        asyncio.run(driver.image_exists("x"))
    assert caught.value.decisive_line == "no answer in 0.5s, killed; last output: starting"


def test_inspect_of_a_missing_container_is_none(tmp_path: Path) -> None:
    fake = _fake_podman(
        tmp_path,
        "import sys\nprint('[]')\nprint('Error: no such container nope', file=sys.stderr)\n"
        "sys.exit(125)\n",
    )
    assert asyncio.run(PodmanDriver(podman=fake).inspect("nope")) is None


def test_failed_checkpoint_leaves_no_archive(tmp_path: Path) -> None:
    # Writes the archive it was given (the partial name), then fails as podman does.
    fake = _fake_podman(
        tmp_path,
        "import sys\nopen(sys.argv[sys.argv.index('--export') + 1], 'w').write('half')\n"
        f"sys.stderr.write({NAME_CONFLICT_STDERR!r})\nsys.exit(125)\n",
    )
    archive = tmp_path / "out" / "c.tar.zst"
    archive.parent.mkdir()
    with pytest.raises(RuntimeCommandError) as caught:
        asyncio.run(PodmanDriver(podman=fake).checkpoint("c1", archive, CheckpointOptions()))
    assert caught.value.exit_code == 125
    assert list(archive.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("line", "fix"),
    [
        ("inet: Connected TCP socket, consider using --tcp-established option.", "tcpEstablished"),
        ("Some file locks are hold without --file-locks option", "fileLocks"),
        ("sockets: Can't get 1:16 opt: Operation not supported", "CRIU 4.2 or newer"),
        ("adding rootfs: localhost/web:1: image not known", "image is missing"),
        ('the container name "web" is already in use by 3f2a', "another name"),
        ("mount /srv/data: No such file or directory", "mounts is missing"),
        ("External socket is used. Consider using --ext-unix-sk option.", "unix socket"),
    ],
)
def test_known_causes_come_with_what_to_do(line: str, fix: str) -> None:
    hint = errors.advice([line])
    assert hint is not None
    assert fix in hint


def test_an_unknown_cause_gets_no_made_up_advice() -> None:
    assert errors.advice(["restore: something nobody has seen before"]) is None


def test_creation_times_read_as_podman_and_docker_print_them() -> None:
    utc = records.epoch_seconds("2026-11-25T23:27:29.544506731Z")
    assert utc == pytest.approx(1795649249.544506, abs=1e-6)
    assert records.epoch_seconds("2026-11-26T00:27:29.544506731+01:00") == pytest.approx(utc)
    assert records.epoch_seconds("2026-11-25T23:27:29Z") == pytest.approx(utc - 0.544506, abs=1e-6)
    assert records.epoch_seconds("") == 0.0
    assert records.epoch_seconds("yesterday") == 0.0
