"""The helper's pure parts for users' diagnostics: kept failure logs and reading CRIU images."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import pytest
from ferry_helper import criu_images
from ferry_helper.drivers.errors import RuntimeCommandError
from ferry_helper.failure_logs import FailureLogs

UID = "0b5a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3"


def _error(log_tail: bytes | None) -> RuntimeCommandError:
    return RuntimeCommandError(
        command=["podman", "container", "checkpoint", "web"],
        exit_code=125,
        stderr="Error: crun checkpoint failed\n",
        decisive_line="inet: Connected TCP socket",
        criu_log_tail=log_tail,
    )


def test_a_failed_step_keeps_the_criu_log_and_the_tool_output(tmp_path: Path) -> None:
    logs = FailureLogs(tmp_path, retention_seconds=3600)
    logs.keep(UID, "checkpoint", _error(b"(00.1) Error (criu/sk-inet.c:1): inet: Connected\n"))
    files = {f.name: gzip.decompress(f.gzipped).decode() for f in logs.read(UID, budget_bytes=4096)}
    assert set(files) == {"checkpoint.criu.log", "checkpoint.podman.txt"}
    assert "inet: Connected" in files["checkpoint.criu.log"]
    assert "exit code: 125" in files["checkpoint.podman.txt"]
    assert "crun checkpoint failed" in files["checkpoint.podman.txt"]


def test_a_log_over_budget_keeps_its_tail(tmp_path: Path) -> None:
    logs = FailureLogs(tmp_path, retention_seconds=3600)
    noise = os.urandom(200_000).hex().encode()  # text that compresses only 2:1
    logs.keep(UID, "restore", _error(noise + b"\nthe reason at the end\n"))
    (criu,) = [f for f in logs.read(UID, budget_bytes=40_000) if f.name.endswith("criu.log")]
    assert criu.truncated
    assert len(criu.gzipped) <= 20_000, "half the budget each, for two files"
    assert gzip.decompress(criu.gzipped).endswith(b"the reason at the end\n")


def test_old_logs_are_pruned_and_unknown_uids_have_none(tmp_path: Path) -> None:
    logs = FailureLogs(tmp_path, retention_seconds=60)
    logs.keep(UID, "checkpoint", _error(None))
    old = tmp_path / UID
    os.utime(old, (0, 0))
    assert logs.prune() == [UID]
    assert logs.read(UID, budget_bytes=4096) == []
    with pytest.raises(ValueError, match="not a resource UID"):
        logs.read("../etc", budget_bytes=4096)


# -- CRIU images --------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _image(*messages: bytes) -> bytes:
    head = struct.pack("<II", criu_images.IMG_COMMON_MAGIC, 0x50273030)
    return head + b"".join(struct.pack("<I", len(m)) + m for m in messages)


def _inet(proto: int, state: int) -> bytes:
    return (
        _field(1, 4) + _field(2, 7) + _field(4, _field(3, 10) + _field(5, proto) + _field(6, state))
    )


def _archive(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_checkpoint_archive_is_summarized_from_its_images(tmp_path: Path) -> None:
    pstree = _image(
        _field(1, 1) + _field(2, 0) + _field(5, 1),
        _field(1, 7) + _field(2, 1) + _field(5, 7) + _field(5, 8),  # two threads
    )
    files = _image(
        _field(1, 1) + _field(2, 1),  # a regular file
        _inet(6, 10),  # TCP listening
        _inet(6, 1),  # TCP established
        _inet(17, 7),  # UDP
        _field(1, 5) + _field(2, 9),  # unix
    )
    archive = tmp_path / "checkpoint.tar.gz"
    archive.write_bytes(
        gzip.compress(
            _archive(
                {
                    "checkpoint/pstree.img": pstree,
                    "checkpoint/files.img": files,
                    "checkpoint/pages-1.img": b"\1" * 8192,
                    "checkpoint/pages-2.img": b"\1" * 4096,
                    "config.dump": b"{}",
                }
            )
        )
    )
    contents = criu_images.summarize_archive(archive)
    assert (contents.processes, contents.threads) == (2, 3)
    assert contents.memory_bytes == 12288
    assert contents.open_files == 5
    assert contents.sockets == {
        "tcpListening": 1,
        "tcpEstablished": 1,
        "udp": 1,
        "unix": 1,
        "other": 0,
    }


def test_a_damaged_image_counts_what_came_before_the_damage() -> None:
    contents = criu_images.Contents()
    damaged = _image(_field(1, 1) + _field(5, 1)) + struct.pack("<I", 50) + b"\x08"
    contents.add_pstree(damaged)
    contents.add_files(_image(b"\x0a\x05ab"))  # a field longer than its entry
    assert (contents.processes, contents.threads, contents.open_files) == (1, 1, 1)
