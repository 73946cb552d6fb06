"""kubectl ferry, without an API server: manifests, what each command prints, logs, watches.

The commands run through ``cli.main`` as a user would call them, against a fake
cluster that serves the bodies an API server would; stdout is not a terminal
here, so the output is the plain one that pipes and CI logs get.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_api import constants
from ferry_api.checkpoint import parse_container_checkpoint
from ferry_api.migration import parse_container_migration
from ferry_api.nodehelper import parse_node_helper
from ferry_kubectl import cli, logs, manifest, render, session
from ferry_kubectl.errors import PluginError
from ferry_kubectl.follow import Event, Resync, follow
from ferry_kubectl.kinds import Kind
from ferry_kubectl.kube import translate
from ferry_kubectl.output import Format, Output
from ferry_kubectl.watch import watch
from kubectl_fakes import (
    PHASES,
    T0,
    FakeCluster,
    checkpoint_body,
    failed_body,
    fake,
    helper_body,
    logs_config_map,
    migration_body,
    run,
    succeeded_body,
)
from kubernetes.client.exceptions import ApiException
from rich.console import Console

__all__ = ["fake"]  # a fixture, used by name

# Manifests from flags and files


def test_migrate_flags_build_a_validated_manifest_with_generate_name() -> None:
    flags = manifest.MigrateFlags(
        container="My_Web.1",
        source="node-a",
        target="node-b",
        leave_running=True,
        tcp_established=True,
        compression="gzip",
        timeout=120,
        ttl=600,
    )
    body = manifest.from_flags(flags, namespace=None)
    assert body["metadata"] == {"generateName": "my-web-1-"}, "no namespace unless -n is given"
    spec = body["spec"]
    assert spec["source"] == {"node": "node-a", "container": "My_Web.1"}
    assert spec["target"] == {"node": "node-b"}
    assert (spec["leaveRunning"], spec["tcpEstablished"], spec["fileLocks"]) == (True, True, False)
    assert (spec["compression"], spec["timeoutSeconds"]) == ("gzip", 120)
    assert spec["ttlSecondsAfterFinished"] == 600
    # What the operator will parse it as: the same models, the same names.
    parsed = parse_container_migration({**body, "metadata": {"name": "x"}})
    assert parsed.spec.ttl_seconds_after_finished == 600


def test_migrate_flags_with_a_name_and_namespace_and_no_target() -> None:
    flags = manifest.MigrateFlags(container="web", source="node-a", name="move-web")
    body = manifest.from_flags(flags, namespace="apps")
    assert body["metadata"] == {"name": "move-web", "namespace": "apps"}
    assert "target" not in body["spec"], "the operator picks the target"
    assert "runtime" not in body["spec"], "the operator finds the container's runtime"


def test_migrate_runtime_flag_pins_the_runtime() -> None:
    flags = manifest.MigrateFlags(container="web", source="node-a", runtime="docker")
    assert manifest.from_flags(flags, namespace=None)["spec"]["runtime"] == "docker"
    with pytest.raises(PluginError, match="--runtime: Input should be 'podman' or 'docker'"):
        manifest.from_flags(
            manifest.MigrateFlags(container="web", source="node-a", runtime="rkt"), None
        )


def test_migrate_memory_transfer_flags_choose_the_page_server_and_its_link() -> None:
    flags = manifest.MigrateFlags(
        container="web", source="node-a", memory_transfer="PageServer", page_server_tls=False
    )
    spec = manifest.from_flags(flags, namespace=None)["spec"]
    # Under whichever name the API model writes it (pageServerTLS since the acronym rename).
    tls = {k: v for k, v in spec.items() if k.lower() == "pageservertls"}
    assert (spec["memoryTransfer"], list(tls.values())) == ("PageServer", [False])
    with pytest.raises(PluginError, match="keepCheckpoint cannot be used"):
        manifest.from_flags(
            manifest.MigrateFlags(
                container="web",
                source="node-a",
                memory_transfer="PageServer",
                keep_checkpoint=True,
            ),
            None,
        )


def test_pages_received_are_rendered_with_the_timings() -> None:
    body = succeeded_body()
    body["status"]["pagesBytes"] = 67_186_688
    rows = dict(render.timing_rows(parse_container_migration(body).status))
    assert rows["memory pages"] == "67.2 MB"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            manifest.MigrateFlags(container="web", source="node-a", target="node-a"),
            "target.node must differ from source.node",
        ),
        (
            manifest.MigrateFlags(container="web", source="Node_A"),
            "--from: 'Node_A' is not a node name",
        ),
        (
            manifest.MigrateFlags(container="web", source="node-a", timeout=5),
            "--timeout: Input should be greater than or equal to 10",
        ),
        (
            manifest.MigrateFlags(container="web", source="node-a", ttl=-1),
            "--ttl: Input should be greater than or equal to 0",
        ),
        (
            manifest.MigrateFlags(container="-web", source="node-a"),
            "CONTAINER: '-web' is not a container name or ID",
        ),
        (
            manifest.MigrateFlags(container="web", source="node-a", name="Move_Web"),
            "invalid name 'Move_Web'",
        ),
    ],
)
def test_migrate_flags_are_refused_client_side_by_flag(
    flags: manifest.MigrateFlags, said: str
) -> None:
    with pytest.raises(PluginError) as refused:
        manifest.from_flags(flags, namespace=None)
    assert said in str(refused.value)


def test_manifest_files_are_read_checked_and_placed() -> None:
    text = """
apiVersion: ferry.dev/v1alpha1
kind: ContainerMigration
metadata: {name: one}
spec: {source: {node: node-a, container: web}}
---
apiVersion: ferry.dev/v1alpha1
kind: ContainerMigration
metadata: {generateName: two-, namespace: other}
spec: {source: {node: node-b, container: db}, compression: none}
"""
    one, two = manifest.load(text, source="moves.yaml")
    assert one["spec"]["compression"] == "zstd", "defaults filled from the model"
    assert manifest.place(one, "apps", explicit=False) == "apps"
    assert manifest.place(two, "apps", explicit=False) == "other"
    with pytest.raises(PluginError, match='namespace "other" does not match'):
        manifest.place(two, "apps", explicit=True)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("kind: Pod\napiVersion: v1\nmetadata: {name: p}\n", "expected kind ContainerMigration"),
        (
            "kind: ContainerMigration\napiVersion: ferry.dev/v1alpha1\n"
            "spec: {source: {node: a, container: w}}\n",
            "metadata.name (or generateName) is required",
        ),
        (
            "kind: ContainerMigration\napiVersion: ferry.dev/v1alpha1\nmetadata: {name: m}\n"
            "spec: {source: {node: a, container: w}, timeoutSeconds: 1}\n",
            "spec.timeoutSeconds: Input should be greater than or equal to 10",
        ),
        (
            "kind: ContainerMigration\napiVersion: ferry.dev/v1alpha1\nmetadata: {name: m}\n"
            "spec: {source: {node: a, container: w}, speed: fast}\n",
            "spec.speed: Extra inputs are not permitted",
        ),
        ("", "no manifest in it"),
        ("a: [", "not YAML"),
    ],
)
def test_bad_manifest_files_are_refused_naming_the_file(text: str, said: str) -> None:
    with pytest.raises(PluginError) as refused:
        manifest.load(text, source="m.yaml")
    assert str(refused.value).startswith("m.yaml: ")
    assert said in str(refused.value)


# Rendering


def test_a_succeeded_migration_renders_its_phases_outcome_and_timings() -> None:
    migration = parse_container_migration(succeeded_body())
    lines = render.phase_lines(migration.status)
    assert [line.split()[-1] for line in lines] == [*PHASES, "Succeeded"]
    assert lines[0].split() == ["0.0s", "Pending"]
    assert lines[-1].split() == ["1.8s", "Succeeded"]
    assert render.outcome_lines(migration) == ["Succeeded: web moved node-a -> node-b"]
    assert dict(render.timing_rows(migration.status)) == {
        "checkpoint": "0.412 s",
        "transfer": "0.051 s",
        "restore": "0.733 s",
        "downtime": "1.301 s",
        "total": "2.874 s",
        "archive": "38.2 kB (zstd)",
        "CRIU frozen": "0.371 s",
    }


def test_a_failed_migration_renders_why_and_where_its_logs_are() -> None:
    migration = parse_container_migration(failed_body())
    assert render.outcome_lines(migration) == [
        "Failed (CheckpointFailed): inet: Connected TCP socket; "
        "to fix: set spec.tcpEstablished: true",
        "Full logs: kubectl ferry logs web-x7k2p -n apps",
    ]
    assert render.timing_rows(migration.status) == [("checkpoint", "0.200 s"), ("total", "0.900 s")]


def test_a_migration_runs_from_its_first_phase_to_its_last() -> None:
    done = parse_container_migration(succeeded_body())
    assert (render.started(done), render.finished(done)) == (T0, T0 + timedelta(seconds=1.75))
    running = parse_container_migration(migration_body("Pending"))
    assert (render.started(running), render.finished(running)) == (T0, None)


def test_a_migration_without_transitions_shows_its_phase() -> None:
    body = migration_body("Pending")
    body["status"]["phaseTransitions"] = []
    assert render.phase_lines(parse_container_migration(body).status) == ["         Pending"]


def test_list_rows_show_route_downtime_and_age() -> None:
    migration = parse_container_migration(succeeded_body())
    now = T0 + timedelta(minutes=7, seconds=3)
    assert render.migration_cells(migration, now, all_namespaces=True) == [
        "apps",
        "web-x7k2p",
        "Succeeded",
        "web",
        "node-a -> node-b",
        "1.301s",
        "7m3s",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5, "5s"), (119, "119s"), (300, "5m"), (330, "5m30s"), (3000, "50m"), (4 * 3600, "4h"),
     (5 * 3600 + 60, "5h1m"), (30 * 3600, "30h"), (3 * 86400 + 3600, "3d1h"), (40 * 86400, "40d"),
     (3 * 365 * 86400 + 86400, "3y1d")],
)  # fmt: skip
def test_ages_read_as_kubectl_prints_them(seconds: float, shown: str) -> None:
    assert render.human_duration(seconds) == shown


def test_a_node_row_names_runtimes_criu_and_its_features() -> None:
    helper = parse_node_helper(helper_body("node-a"))
    assert render.node_cells(helper) == [
        "node-a",
        "True",
        "10.213.0.10",
        "podman 5.4.2 (crun 1.21)",
        "4.2.1",
        "lazyPages, uffd, dirtyPageTracking",
        "6.18.0",
        "v2",
    ]
    assert len(render.node_cells(helper)) == len(render.NODE_HEADERS)
    assert render.criu_features(helper) == ["lazyPages", "uffd", "dirtyPageTracking"]
    wide = render.node_cells(helper, T0, wide=True)
    assert len(wide) == len(render.node_headers(wide=True))


def test_inspect_shows_the_summary_of_a_checkpoint() -> None:
    rows = dict(render.checkpoint_rows(parse_container_checkpoint(checkpoint_body(summary=True))))
    assert rows["Phase"] == "Ready"
    assert rows["Image"] == "localhost/ferry/busybox:latest (0123456789ab)"
    assert rows["Storage"] == f"archive 2.5 MB, zstd, sha256 {'b' * 64}"
    assert rows["Checkpointed"] == "2025-03-01T12:00:10Z (took 0.500 s)"
    assert (rows["Processes"], rows["Threads"], rows["Open files"]) == ("2", "3", "9")
    assert rows["Memory"] == "12.6 MB"
    assert rows["Sockets"] == "1 TCP listening, 2 unix"
    assert rows["Runtime"] == "podman 5.4.2 (crun ?)"
    assert (rows["CRIU"], rows["Kernel"]) == ("4.2.1", "6.18.0")


def test_inspect_says_when_no_summary_was_recorded() -> None:
    rows = dict(render.checkpoint_rows(parse_container_checkpoint(checkpoint_body(summary=False))))
    assert rows["Summary"] == "no summary recorded"
    assert "Processes" not in rows


def test_inspect_of_a_registry_checkpoint_shows_the_image() -> None:
    body = checkpoint_body(summary=False)
    body["spec"]["storage"] = {"type": "Registry", "repository": "10.0.0.1:5000/ferry/ckpt"}
    body["status"]["checkpointImage"] = {
        "reference": "10.0.0.1:5000/ferry/ckpt:nightly-web-1a2b",
        "digest": "sha256:" + "c" * 64,
    }
    rows = dict(render.checkpoint_rows(parse_container_checkpoint(body)))
    assert rows["Storage"] == f"image 10.0.0.1:5000/ferry/ckpt:nightly-web-1a2b@sha256:{'c' * 64}"


# Failure logs


def test_logs_are_gunzipped_from_the_config_map() -> None:
    files = logs.decode(
        logs_config_map({"dump.log": b"(00.1) Error: inet\n", "podman.log": b"exit 1"})
    )
    assert files == {"dump.log": b"(00.1) Error: inet\n", "podman.log": b"exit 1"}
    assert (
        logs.as_text(files)
        == "==> dump.log <==\n(00.1) Error: inet\n\n==> podman.log <==\nexit 1\n"
    )
    assert logs.select(files, "dump.log.gz") == {"dump.log": b"(00.1) Error: inet\n"}
    with pytest.raises(PluginError, match=r"no log named 'restore.log' \(the logs: dump.log"):
        logs.select(files, "restore.log")


@pytest.mark.parametrize("bad", ["..", "."])
def test_a_log_name_that_is_a_path_is_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="not a plain file name"):
        logs.decode(logs_config_map({bad: b"x"}))


def test_a_log_that_is_not_gzip_is_named() -> None:
    config_map = {"metadata": {"name": "m-logs"}, "binaryData": {"dump.log.gz": "aGVsbG8="}}
    with pytest.raises(PluginError, match=r"m-logs: dump\.log\.gz is not gzip data"):
        logs.decode(config_map)


def test_failure_logs_are_found_by_kind() -> None:
    phase, where = logs.failure_logs("migration", failed_body())
    assert phase == "Failed"
    assert where is not None
    assert where.config_map == "web-x7k2p-logs"
    assert logs.failure_logs("migration", succeeded_body()) == ("Succeeded", None)
    assert logs.failure_logs("checkpoint", checkpoint_body(summary=False)) == ("Ready", None)


# Following a migration


def test_follow_watches_again_and_lists_again_when_the_version_expired() -> None:
    pending, checkpointing, done = (
        migration_body("Pending"),
        migration_body("Pending"),
        succeeded_body(),
    )
    checkpointing["status"]["phase"] = "Checkpointing"
    lists = iter([(pending, "10"), (checkpointing, "20")])
    watches: list[str] = []

    def watch_from(version: str) -> Iterator[Event]:
        watches.append(version)
        if len(watches) == 1:
            yield Event("BOOKMARK", {}, "15")  # the server ended this watch after a bookmark
        elif len(watches) == 2:
            raise Resync("gone")
        else:
            yield Event("MODIFIED", done, "30")

    seen = list(
        follow(lambda: next(lists), watch_from, is_final=_final, what='containermigration "m"')
    )
    assert [b["status"]["phase"] for b in seen] == ["Pending", "Checkpointing", "Succeeded"]
    assert watches == ["10", "15", "20"], "from the list, then the bookmark, then a new list"


def test_follow_says_when_the_object_is_missing_or_deleted() -> None:
    with pytest.raises(PluginError, match='containermigration "m" not found'):
        list(
            follow(
                lambda: (None, "1"), lambda _: [], is_final=_final, what='containermigration "m"'
            )
        )
    deleted = [Event("DELETED", migration_body("Pending"), "2")]
    with pytest.raises(PluginError, match="was deleted before it finished"):
        list(
            follow(
                lambda: (migration_body("Pending"), "1"),
                lambda _: deleted,
                is_final=_final,
                what="m",
            )
        )


def _final(body: dict[str, Any]) -> bool:
    return body["status"]["phase"] in ("Succeeded", "Failed", "Cancelled")


# API errors


def test_api_errors_name_the_resource() -> None:
    what = Kind("containermigration", "containermigrations").describe("web", "apps")
    assert translate(ApiException(status=404), action="get", what=what) == (
        'containermigration "web" in namespace "apps" not found'
    )
    forbidden = ApiException(status=403)
    forbidden.body = json.dumps({"message": 'User "bob" cannot get resource "containermigrations"'})
    assert translate(forbidden, action="get", what=what).startswith(
        'forbidden: you may not get containermigration "web" in namespace "apps" (User "bob"'
    )


# The commands as a user runs them


def test_watch_prints_a_line_per_phase_then_the_timings_and_exits_0(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    early = migration_body("Pending")
    fake.states = [early, succeeded_body()]
    code, out, _ = run(capsys, "watch", "web-x7k2p")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[-1] for line in lines[: len(PHASES) + 1]] == [*PHASES, "Succeeded"]
    assert "Succeeded: web moved node-a -> node-b" in lines
    assert ["downtime", "1.301", "s"] in [line.split() for line in lines]
    assert ["CRIU", "frozen", "0.371", "s"] in [line.split() for line in lines]
    assert "\x1b[" not in out, "no colours when stdout is not a terminal"


def test_watch_on_a_terminal_draws_the_bar_and_the_same_report(fake: FakeCluster) -> None:
    fake.states = [migration_body("Pending"), succeeded_body()]
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, markup=False)
    terminal = Output(console=console, interactive=True, format=Format.TEXT)
    code, final = watch(fake, "apps", "web-x7k2p", terminal)  # type: ignore[arg-type]
    assert (code, final) == (0, succeeded_body())
    drawn = screen.getvalue()
    assert "\x1b[" in drawn, "colours and cursor moves on a terminal"
    assert "38.2/38.2 kB" in drawn, "the bar: bytes sent of the archive"
    assert "Succeeded: web moved node-a -> node-b" in drawn
    assert "1.301 s" in drawn


def test_watch_of_a_failure_exits_1_with_the_reason_and_the_logs_hint(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.states = [failed_body()]
    code, out, _ = run(capsys, "watch", "web-x7k2p")
    assert code == 1
    assert "Failed (CheckpointFailed): inet: Connected TCP socket" in out
    assert "Full logs: kubectl ferry logs web-x7k2p -n apps" in out


def test_watch_json_prints_only_the_final_object(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.states = [migration_body("Pending"), succeeded_body()]
    code, out, _ = run(capsys, "watch", "web-x7k2p", "-o", "json")
    assert code == 0
    assert json.loads(out) == succeeded_body()


def test_migrate_creates_then_watches(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.states = [succeeded_body()]
    code, out, _ = run(capsys, "migrate", "web", "--from", "node-a", "--to", "node-b")
    assert code == 0
    assert out.splitlines()[0] == "containermigration.ferry.dev/web-x7k2p created"
    assert fake.created[0]["metadata"] == {"generateName": "web-", "namespace": "apps"}
    assert "Succeeded: web moved node-a -> node-b" in out


def test_migrate_f_of_two_migrations_watches_both_and_prints_one_json_list(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake.states = [failed_body()]
    document = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"generateName": "web-"},
        "spec": {"source": {"node": "node-a", "container": "web"}},
    }
    manifest_file = tmp_path / "moves.yaml"
    manifest_file.write_text(yaml.safe_dump_all([document, document]))
    code, out, _ = run(capsys, "migrate", "-f", str(manifest_file), "-o", "json")
    assert code == 1, "one failed"
    listed = json.loads(out)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List"), "kubectl's List"
    assert [b["status"]["phase"] for b in listed["items"]] == ["Failed", "Failed"]
    assert len(fake.created) == 2, "migrate -f creates: generateName makes a new one each time"
    code, _, err = run(capsys, "apply", "-f", str(manifest_file))
    assert code == 2
    assert "apply needs metadata.name" in err


def test_migrate_dry_run_json_parses_and_creates_nothing(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "migrate", "web", "--from", "node-a", "--dry-run", "-o", "json")
    assert code == 0
    body = json.loads(out)
    assert body["metadata"] == {"generateName": "web-", "namespace": "apps"}
    assert body["spec"]["source"] == {"node": "node-a", "container": "web"}
    assert fake.created == []


def test_apply_from_stdin_with_dry_run_prints_yaml(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": "move-web"},
        "spec": {"source": {"node": "node-a", "container": "web"}},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(document)))
    code, out, _ = run(capsys, "apply", "-f", "-", "--dry-run")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["metadata"] == {"name": "move-web", "namespace": "apps"}
    assert fake.created == []


def test_nodes_json_lists_every_node(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.helpers = [helper_body("node-b", ready="False"), helper_body("node-a")]
    code, out, _ = run(capsys, "nodes", "-o", "json")
    assert code == 0
    listed = json.loads(out)
    assert listed["kind"] == "List", "whole NodeHelpers, as kubectl get -o json"
    assert [(n["status"]["nodeName"], n["status"]["criu"]["version"]) for n in listed["items"]] == [
        ("node-a", "4.2.1"),
        ("node-b", "4.2.1"),
    ]
    code, out, _ = run(capsys, "nodes")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NODE", "READY", "ADDRESS"]
    assert rows[0].split()[:2] == ["node-a", "True"]
    assert all(line == line.rstrip() for line in out.splitlines())


def test_list_json_and_text(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = succeeded_body()
    code, out, _ = run(capsys, "ls", "-o", "json")
    assert code == 0
    assert json.loads(out)["items"] == [succeeded_body()], "the objects as the API server sent them"
    code, out, _ = run(capsys, "list")
    assert out.splitlines()[0].split() == [
        "NAME", "PHASE", "CONTAINER", "SOURCE", "->", "TARGET", "DOWNTIME", "AGE"
    ]  # fmt: skip
    assert out.splitlines()[1].split()[:6] == [
        "web-x7k2p", "Succeeded", "web", "node-a", "->", "node-b"
    ]  # fmt: skip


def test_inspect_text_and_json(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(constants.CONTAINER_CHECKPOINT_PLURAL, "nightly-web")] = checkpoint_body(
        summary=True
    )
    code, out, _ = run(capsys, "inspect", "nightly-web")
    assert code == 0
    assert ["Memory:", "12.6", "MB"] in [line.split() for line in out.splitlines()]
    code, out, _ = run(capsys, "inspect", "nightly-web", "-o", "json")
    assert json.loads(out)["status"]["summary"]["processes"] == 2, "the whole object"


def test_logs_print_each_file_or_write_them(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = failed_body()
    fake.config_maps["web-x7k2p-logs"] = logs_config_map({"dump.log": b"Error (criu/sk-inet.c)\n"})
    code, out, _ = run(capsys, "logs", "web-x7k2p")
    assert (code, out) == (0, "==> dump.log <==\nError (criu/sk-inet.c)\n")
    code, out, _ = run(capsys, "logs", "web-x7k2p", "--output-dir", str(tmp_path / "out"))
    assert code == 0
    assert (tmp_path / "out" / "dump.log").read_bytes() == b"Error (criu/sk-inet.c)\n"
    assert out.startswith(f"wrote {tmp_path / 'out' / 'dump.log'} (")


def test_logs_errors_are_one_line_with_their_exit_code(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "ok")] = succeeded_body()
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = failed_body()
    cases = {
        ("logs", "ok"): (2, "error: the migration ok has no failure logs: it is Succeeded\n"),
        ("logs", "nosuch"): (
            3,
            'error: containermigration "nosuch" in namespace "apps" not found\n',
        ),
        ("logs", "web-x7k2p"): (
            2,
            'error: configmap "web-x7k2p-logs" holding the logs of the migration web-x7k2p is '
            'gone from namespace "apps" (the helpers on node-a keep a copy for a while)\n',
        ),
    }
    for argv, (exit_code, said) in cases.items():
        code, out, err = run(capsys, *argv)
        assert (code, out, err) == (exit_code, "", said)


def test_usage_errors_are_one_error_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate", "web", "--from", "node-a", "--compression", "lz4"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --compression: invalid choice: 'lz4'")
    assert err.count("\n") == 1


def test_the_namespace_comes_from_the_kubeconfig_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "team", "context": {"cluster": "c", "user": "u", "namespace": "team"}},
                    {"name": "bare", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "team",
            }
        )
    )

    def namespace(*argv: str) -> str:
        args = cli.build_parser().parse_args([*argv, "list", "--kubeconfig", str(kubeconfig)])
        return session.Env(args, output=None).namespace  # type: ignore[arg-type]

    assert namespace() == "team"
    assert namespace("--context", "bare") == "default"
    assert namespace("-n", "mine") == "mine"
    with pytest.raises(PluginError, match='context "nope" is not in the kubeconfig'):
        namespace("--context", "nope")


def test_migrate_pod_makes_a_pod_migration_and_refuses_container_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "migrate", "pod/counter-7d9c8b-x2k4p", "--to", "node-b", "--dry-run")
    assert code == 0
    body = yaml.safe_load(out)
    assert body["kind"] == "PodMigration"
    assert body["metadata"] == {"generateName": "counter-7d9c8b-x2k4p-", "namespace": "apps"}
    assert body["spec"]["podName"] == "counter-7d9c8b-x2k4p"
    assert body["spec"]["target"] == {"node": "node-b"}
    code, _, err = run(capsys, "migrate", "pod/web", "--from", "node-a", "--dry-run")
    assert code == 2
    assert "--from: not for a pod" in err
    code, _, err = run(capsys, "migrate", "pod/Bad_Name", "--dry-run")
    assert code == 2
    assert "'Bad_Name' is not a pod name" in err


def test_a_migration_queued_for_a_slot_says_so_in_the_list(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    body = succeeded_body()
    body["status"] = {
        "phase": "Validating",
        "message": "waiting for a free slot: node-a already has 2 migration(s) in flight "
        "(operator.maxMigrationsPerNode); nothing is frozen yet",
    }
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = body
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "Validating (queued: node-a already has 2 migration(s) in flight" in " ".join(
        out.split()
    )
    code, out, _ = run(capsys, "ls", "-o", "wide")
    header, row = out.splitlines()
    assert header.split()[-5:] == ["TOTAL", "ARCHIVE", "MEMORY", "BY", "REASON"]
    assert row.split()[-1] == "-", "no reason while it runs"
