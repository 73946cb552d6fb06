"""kubectl ferry's kubectl habits, without an API server: durations, ``-o``, ``--dry-run``,
``apply`` twice, exit codes, ``cancel``, ``checkpoint``, ``restore``, ``version``,
impersonation and completion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_api import constants
from ferry_kubectl import completion, durations, kinds, parser
from ferry_kubectl.errors import EXIT_CODES, PluginError
from ferry_kubectl.kube import Impersonating
from ferry_kubectl.output import resource_name
from ferry_kubectl.parser import build_parser
from ferry_kubectl.watch import interrupted
from kubectl_fakes import (
    FakeCluster,
    checkpoint_body,
    failed_body,
    fake,
    migration_body,
    run,
    succeeded_body,
)

__all__ = ["fake"]  # a fixture, used by name

Body = dict[str, Any]


# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("2m30s", 150),
     ("1500ms", None), ("0", 0), ("1h0m0s", 3600), (".5m", 30)],
)  # fmt: skip
def test_durations_are_seconds_or_go_durations(text: str, seconds: int | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError, match="not a whole number of seconds"):
            durations.parse_seconds(text)
    else:
        assert durations.parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5 m", "5x", "-5m", "m", "1h-30m", "5mm"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each says why in its own words
        durations.parse_seconds(text)


def test_a_duration_flag_fills_the_seconds_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "migrate", "web", "--from", "node-a", "--timeout", "2m", "--ttl", "1h",
        "--dry-run=client", "-o", "json",
    )  # fmt: skip
    assert code == 0
    spec = json.loads(out)["spec"]
    assert (spec["timeoutSeconds"], spec["ttlSecondsAfterFinished"]) == (120, 3600)
    with pytest.raises(SystemExit) as exited:
        run(capsys, "restore", "snap", "--timeout", "soon")
    assert exited.value.code == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


# Names, kinds, -o


def test_names_are_kind_group_slash_name_and_read_back() -> None:
    assert resource_name(succeeded_body()) == "containermigration.ferry.dev/web-x7k2p"
    among = kinds.FOLLOWED
    assert kinds.reference("web", among=among) == (kinds.MIGRATION, "web")
    for text in ("containermigration.ferry.dev/web", "cmig/web", "containermigrations/web"):
        assert kinds.reference(text, among=among) == (kinds.MIGRATION, "web")
    assert kinds.reference("pmig/p", among=among) == (kinds.POD_MIGRATION, "p")
    assert kinds.reference("ccp/snap", among=among) == (kinds.CHECKPOINT, "snap")
    assert kinds.reference("containerrestore/r", among=among) == (kinds.RESTORE, "r")
    with pytest.raises(PluginError, match=r"not one of containermigration, podmigration$"):
        kinds.reference("ccp/snap", among=kinds.CANCELLABLE)


def test_every_reading_command_prints_yaml_json_and_names(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = succeeded_body()
    fake.objects[(constants.CONTAINER_CHECKPOINT_PLURAL, "nightly-web")] = checkpoint_body(
        summary=True
    )
    fake.states = [succeeded_body()]
    for argv, name in [
        (("list",), "containermigration.ferry.dev/web-x7k2p"),
        (("inspect", "nightly-web"), "containercheckpoint.ferry.dev/nightly-web"),
        (("watch", "web-x7k2p"), "containermigration.ferry.dev/web-x7k2p"),
    ]:
        _, as_json, _ = run(capsys, *argv, "-o", "json")
        _, as_yaml, _ = run(capsys, *argv, "-o", "yaml")
        assert json.loads(as_json) == yaml.safe_load(as_yaml), argv
        code, names, _ = run(capsys, *argv, "-o", "name")
        assert (code, names) == (0, f"{name}\n"), argv


def test_list_takes_a_label_selector(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    labelled = succeeded_body()
    labelled["metadata"] = {**labelled["metadata"], "name": "db-1", "labels": {"team": "db"}}
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = succeeded_body()
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "db-1")] = labelled
    code, out, _ = run(capsys, "list", "-l", "team=db", "-o", "name")
    assert (code, out) == (0, "containermigration.ferry.dev/db-1\n")
    code, out, _ = run(capsys, "list", "--selector", "team=none")
    assert out == 'No ContainerMigrations found in namespace "apps" matching team=none.\n'


# --dry-run


def test_dry_run_client_sends_nothing_and_reads_no_kubeconfig(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    code, out, _ = run(capsys, "checkpoint", "web", "--node", "node-a", "--dry-run=client")
    assert (code, out) == (0, "containercheckpoint.ferry.dev/web- created (dry run)\n")
    code, out, err = run(capsys, "migrate", "web", "--from", "node-a", "--dry-run")
    assert code == 0
    assert yaml.safe_load(out)["kind"] == "ContainerMigration", "the bare flag: YAML, as before"
    assert "--dry-run alone is deprecated" in err


def test_dry_run_server_creates_with_dry_run_and_follows_nothing(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "migrate", "web", "--from", "node-a", "--dry-run=server")
    assert (code, out) == (0, "containermigration.ferry.dev/web-x7k2p created (server dry run)\n")
    assert fake.created == []
    assert len(fake.dry_runs) == 1
    code, out, _ = run(capsys, "restore", "snap", "--dry-run=server", "-o", "yaml")
    assert yaml.safe_load(out)["spec"]["checkpointRef"] == {"name": "snap"}
    with pytest.raises(SystemExit):
        run(capsys, "migrate", "web", "--from", "a", "--dry-run=maybe")
    assert "use client, server or none" in capsys.readouterr().err


def test_the_bare_dry_run_never_swallows_the_next_word() -> None:
    args = build_parser().parse_args(parser.normalize(["drain", "--dry-run", "node-a"]))
    assert (args.node, args.dry_run) == ("node-a", "bare")


# apply


def _manifest(tmp_path: Path, **spec: Any) -> Path:
    document = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": "move-web"},
        "spec": {"source": {"node": "node-a", "container": "web"}, **spec},
    }
    path = tmp_path / "move-web.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_apply_twice_is_unchanged_and_starts_no_second_migration(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _manifest(tmp_path)
    fake.states = [succeeded_body()]
    code, out, _ = run(capsys, "apply", "-f", str(path))
    assert code == 0
    assert out.splitlines()[0] == "containermigration.ferry.dev/move-web created"
    code, out, _ = run(capsys, "apply", "-f", str(path), "--no-watch")
    assert (code, out) == (0, "containermigration.ferry.dev/move-web unchanged\n")
    assert [m for (plural, m) in fake.objects if plural == "containermigrations"] == ["move-web"]
    assert fake.created == [], "applied, never POSTed"


def test_apply_of_a_changed_spec_is_one_line_naming_the_immutable_spec(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "apply", "-f", str(_manifest(tmp_path)), "--no-watch")
    code, out, err = run(capsys, "apply", "-f", str(_manifest(tmp_path, compression="gzip")))
    assert (code, out) == (3, "")
    assert err.count("\n") == 1
    assert err.startswith(
        'error: containermigration "move-web" in namespace "apps" exists with another spec, '
        "and a ContainerMigration's spec is immutable"
    )


def test_apply_takes_checkpoints_and_restores_too(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    documents = [
        {
            "apiVersion": constants.API_VERSION,
            "kind": "ContainerCheckpoint",
            "metadata": {"name": "snap"},
            "spec": {"source": {"node": "node-a", "container": "web"}},
        },
        {
            "apiVersion": constants.API_VERSION,
            "kind": "ContainerRestore",
            "metadata": {"name": "again"},
            "spec": {"checkpointRef": {"name": "snap"}},
        },
    ]
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    code, out, _ = run(capsys, "apply", "-f", str(path), "--no-watch", "-o", "name")
    assert (code, out) == (
        0,
        "containercheckpoint.ferry.dev/snap\ncontainerrestore.ferry.dev/again\n",
    )


# Exit codes


def test_exit_codes_tell_a_failed_migration_from_a_command_that_could_not_run(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [code for code, _ in EXIT_CODES] == [0, 1, 2, 3, 130]
    fake.states = [failed_body()]
    assert run(capsys, "watch", "web-x7k2p")[0] == 1, "a result"
    fake.states = []
    assert run(capsys, "watch", "nosuch")[0] == 3, "the API: not found"
    assert run(capsys, "migrate", "web")[0] == 2, "usage: no --from"
    help_text = build_parser().format_help()
    assert "exit codes:" in help_text
    assert "  3    the Kubernetes API" in help_text


def test_ctrl_c_says_what_goes_on_and_how_to_follow_or_cancel_it(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_watch(*_: Any) -> Iterator[Any]:
        raise KeyboardInterrupt
        yield

    fake.states = [migration_body("Checkpointing")]
    monkeypatch.setattr(fake, "watch_one", interrupted_watch)
    code, _, err = run(capsys, "watch", "web-x7k2p")
    assert code == 130
    assert err.strip().splitlines() == [
        "stopped following: containermigration web-x7k2p keeps running in the cluster; "
        "follow it again with `kubectl ferry watch web-x7k2p -n apps`, or stop it with "
        "`kubectl ferry cancel web-x7k2p -n apps`"
    ]
    line = interrupted(kinds.CHECKPOINT, "snap", "apps")
    assert "`kubectl ferry watch containercheckpoint/snap -n apps`" in line
    assert "`kubectl delete containercheckpoint snap -n apps`" in line


# cancel


def _deleting(body: Body, phase: str) -> Body:
    return {
        **body,
        "metadata": {**body["metadata"], "deletionTimestamp": "2025-03-01T12:00:05Z"},
        "status": {**body["status"], "phase": phase},
    }


def test_cancel_deletes_a_migration_in_flight_and_follows_its_rollback(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    running = migration_body("Transferring")
    running["status"]["phase"] = "Transferring"
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = running
    fake.states = [
        _deleting(running, "Transferring"),
        _deleting(running, "RollingBack"),
        _deleting(running, "Cancelled"),
    ]
    code, out, _ = run(capsys, "cancel", "web-x7k2p")
    assert code == 0
    assert fake.deleted == ["web-x7k2p"]
    assert out.splitlines() == [
        "containermigration.ferry.dev/web-x7k2p cancelled in phase Transferring",
        "  RollingBack",
        "  Cancelled",
        "Cancelled: web-x7k2p rolled back; the workload runs on its source node",
    ]


def test_cancel_of_one_deleted_before_it_started_and_of_a_finished_one(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = migration_body("Pending")
    pending["status"] = {}
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = pending
    fake.states = []  # no finalizer yet: gone at once
    code, out, _ = run(capsys, "cancel", "web-x7k2p")
    assert code == 0
    assert out.splitlines()[-1].startswith("Cancelled: web-x7k2p was deleted before it started")
    fake.objects[(constants.CONTAINER_MIGRATION_PLURAL, "web-x7k2p")] = succeeded_body()
    code, out, err = run(capsys, "cancel", "web-x7k2p")
    assert (code, out) == (2, "")
    assert "already ended Succeeded: nothing to cancel" in err
    code, _, err = run(capsys, "cancel", "ccp/snap")
    assert code == 2


# checkpoint and restore


def test_checkpoint_is_created_and_followed_to_ready(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = checkpoint_body(summary=False)
    pending["status"] = {"phase": "Checkpointing"}
    fake.states = [pending, checkpoint_body(summary=True)]
    code, out, _ = run(
        capsys, "checkpoint", "web", "--node", "node-a", "--name", "nightly-web", "--stop",
        "--registry", "registry.example:5000/ferry/web",
    )  # fmt: skip
    assert code == 0
    (made,) = fake.created
    assert made["spec"]["leaveRunning"] is False
    assert made["spec"]["storage"] == {
        "type": "Registry",
        "repository": "registry.example:5000/ferry/web",
    }
    lines = out.splitlines()
    assert lines[0] == "containercheckpoint.ferry.dev/nightly-web created"
    assert [line.split()[-1] for line in lines[1:3]] == ["Checkpointing", "Ready"]
    assert any(line.startswith("Ready: web checkpointed on node-a in 0.500 s") for line in lines)
    assert "What it holds: kubectl ferry inspect nightly-web -n apps" in lines


def _restore(phase: str, **status: Any) -> Body:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "ContainerRestore",
        "metadata": {"name": "nightly-web-x7k2p", "namespace": "apps"},
        "spec": {"checkpointRef": {"name": "nightly-web"}, "node": "node-b"},
        "status": {"phase": phase, **status},
    }


def test_restore_is_created_and_followed_and_a_failure_exits_1(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.states = [
        _restore("Transferring"),
        _restore(
            "Succeeded",
            node="node-b",
            containerName="web",
            transferSeconds=0.2,
            restoreSeconds=0.4,
        ),
    ]
    code, out, _ = run(capsys, "restore", "nightly-web", "--node", "node-b", "--timeout", "5m")
    assert code == 0
    assert fake.created[0]["spec"]["timeoutSeconds"] == 300
    assert out.splitlines()[-1] == (
        "Succeeded: web restored on node-b from nightly-web (transfer 0.200 s, restore 0.400 s)"
    )
    fake.states = [
        _restore(
            "Failed",
            conditions=[
                {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": "NameTaken",
                    "message": "node-b already has a container named web",
                }
            ],
        )
    ]
    code, out, _ = run(capsys, "restore", "nightly-web", "--node", "node-b")
    assert code == 1
    assert "Failed (NameTaken): node-b already has a container named web" in out


# version


def test_version_names_the_plugin_the_api_server_and_the_operator(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "version")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Client Version: kubectl-ferry ")
    assert lines[1] == "Server Version: v1.34.4"
    assert lines[2].startswith("Operator Version: 0.1.0 (ferry/operator:0.1.0, deployment ")
    code, out, _ = run(capsys, "version", "-o", "json")
    assert json.loads(out)["operator"][0]["version"] == "0.1.0"
    assert run(capsys, "version", "--client", "-o", "yaml")[0] == 0


# Impersonation


def test_as_and_as_group_send_one_header_per_group() -> None:
    sent: list[Any] = []

    class Pool:
        def request(self, method: str, url: str, **kwargs: Any) -> str:
            sent.append(kwargs["headers"])
            return "response"

    wrapped = Impersonating(Pool(), "jane", ("devs", "ops"))
    assert wrapped.request("GET", "/api", headers={"Accept": "application/json"}) == "response"
    (headers,) = sent
    assert list(headers.items()) == [
        ("Accept", "application/json"),
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "devs"),
        ("Impersonate-Group", "ops"),
    ]


def test_as_group_without_as_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "list", "--as-group", "devs")
    assert code == 2
    assert err == "error: --as-group needs --as: the API server impersonates a user\n"


# Completion


def _names(kind: kinds.Kind, _: Any) -> list[str]:
    return {"containermigration": ["web-x7k2p"], "nodehelper": ["node-a", "node-b"]}.get(
        kind.singular, []
    )


@pytest.mark.parametrize(
    ("words", "current", "expected", "directive"),
    [
        ([], "ca", ["cancel"], 4),
        (["watch"], "", ["web-x7k2p"], 4),
        (["-n", "apps", "cancel"], "w", ["web-x7k2p"], 4),
        (["migrate", "web", "--to"], "", ["node-a", "node-b"], 4),
        (["migrate", "--compression"], "", ["zstd", "gzip", "none"], 4),
        (["apply", "-f"], "", [], 0),
        (["list"], "--sel", ["--selector"], 4),
        (["completion"], "", ["bash", "zsh"], 4),
    ],
)
def test_completion_offers_commands_options_and_names(
    words: list[str], current: str, expected: list[str], directive: int
) -> None:
    candidates, got = completion.complete(build_parser(), words, current, _names)
    shown = [c.split("\t")[0] for c in candidates if c.startswith(current)]
    assert (shown, got) == (expected, directive)


def test_kubectl_complete_ferry_prints_candidates_then_the_directive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert completion.main(["checkpoint", "--st"]) == 0
    assert capsys.readouterr().out == "--stop\n:4\n"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_script_completes_through_kubectl_complete_ferry(tmp_path: Path) -> None:
    fake_program = tmp_path / "kubectl_complete-ferry"
    fake_program.write_text('#!/bin/sh\necho "cancel\tcancel one"\necho ":4"\n')
    fake_program.chmod(0o755)
    script = completion.SCRIPTS["bash"] + (
        'COMP_WORDS=(kubectl-ferry ca); COMP_CWORD=1; _kubectl_ferry; echo "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "cancel\n"


# krew


def test_the_krew_manifest_installs_this_version_on_linux() -> None:
    root = Path(__file__).resolve().parents[2] / "plugin"
    manifest = yaml.safe_load((root / "krew" / "ferry.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == (
        "krew.googlecontainertools.github.com/v1alpha2",
        "Plugin",
    )
    assert manifest["metadata"]["name"] == "ferry", "kubectl ferry"
    project = (root / "pyproject.toml").read_text()
    version = manifest["spec"]["version"]
    assert f'version = "{version.removeprefix("v")}"' in project
    platforms = {
        (p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]): p
        for p in manifest["spec"]["platforms"]
    }
    assert set(platforms) == {("linux", "amd64"), ("linux", "arm64")}
    for (_, arch), platform in platforms.items():
        assert platform["bin"] == "kubectl-ferry"
        assert platform["uri"].endswith(f"/{version}/kubectl-ferry_{version}_linux_{arch}.tar.gz")
        assert len(platform["sha256"]) == 64
        assert {f["from"] for f in platform["files"]} >= {"kubectl-ferry", "kubectl_complete-ferry"}


def test_drain_dry_runs_print_the_evacuation_and_create_nothing(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "drain", "node-a", "--timeout", "2m", "--dry-run=client", "-o", "yaml"
    )
    assert code == 0
    body = yaml.safe_load(out)
    assert (body["kind"], body["spec"]["timeoutSeconds"]) == ("NodeEvacuation", 120)
    code, out, _ = run(capsys, "drain", "node-a", "--dry-run=server")
    assert (code, out) == (0, "nodeevacuation.ferry.dev/drain-node-a created (server dry run)\n")
    assert fake.created == []


def test_following_a_scheduled_checkpoint_ends_once_it_is_scheduled(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    scheduled = checkpoint_body(summary=False)
    scheduled["spec"] = {**scheduled["spec"], "schedule": "0 3 * * *", "keep": 2}
    scheduled["status"] = {"phase": "Scheduled"}
    fake.states = [scheduled]
    code, out, _ = run(capsys, "watch", "ccp/nightly-web")
    assert code == 0
    assert out.splitlines()[-1].startswith("Scheduled: web on node-a at '0 3 * * *', keeping 2")


def test_the_plugin_installs_light_without_the_operators_dependencies() -> None:
    root = Path(__file__).resolve().parents[2]

    def dependencies(component: str) -> set[str]:
        project = (root / component / "pyproject.toml").read_text()
        listed = project.split("dependencies = [", 1)[1].split("]", 1)[0]
        names = [line.strip().strip('",') for line in listed.splitlines()]
        return {n.split(">")[0].split("=")[0].split("<")[0].strip().lower() for n in names if n}

    plugin = dependencies("plugin")
    closure = plugin | dependencies("api")
    assert "ferry-api" in plugin
    assert not closure & {"kopf", "asyncssh", "ferry-wire", "ferry-operator", "aiohttp"}


def test_apply_goes_on_past_a_refused_document_and_exits_with_its_code(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "apply", "-f", str(_manifest(tmp_path)), "--no-watch")
    changed = yaml.safe_load(_manifest(tmp_path, compression="gzip").read_text())
    other = {**changed, "metadata": {"name": "move-db"}}
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump_all([changed, other]))
    code, out, err = run(capsys, "apply", "-f", str(path), "--no-watch")
    assert code == 3, "the refused one's code"
    assert out == "containermigration.ferry.dev/move-db created\n", "the other still went"
    assert "spec is immutable" in err
