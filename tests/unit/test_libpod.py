"""The podman driver's REST API path: what it reads and writes, without podman.

The samples are real, from podman 5.4.2 with crun 1.21 and CRIU 4.2.1 on the
simulated nodes. The path itself runs against real podman in
``tests/e2e/test_podman_driver.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from aiohttp import web
from ferry_helper.criu_stats import parse_stats_image, statistics_of_entry
from ferry_helper.drivers import podman_parsing
from ferry_helper.drivers.libpod import Libpod, LibpodError, ServiceUnavailable, error_message
from ferry_helper.drivers.libpod_export import finish_export, statistics_in
from ferry_helper.drivers.records import CheckpointOptions, Compression

# CRIU's stats-dump of a busybox shell, taken from a podman export.
STATS_DUMP = bytes.fromhex(
    "4059105506330957240000000a2208a295061082f50318bd0920b8012831300038214000480050085808600068007000"
)
RESTORE_REPORT = {
    "Id": "558b295f5c5d752b328dd3edc03a9a9cc4a64a745ed1c39400d44ec239d92c4a",
    "runtime_restore_duration": 131246,
    "criu_statistics": {
        "pages_compared": 9,
        "pages_skipped_cow": 2,
        "forking_time": 529,
        "restore_time": 83795,
        "pages_restored": 31,
    },
}


def test_criu_stats_image_gives_the_dump_counters() -> None:
    stats = parse_stats_image(STATS_DUMP).as_dict()
    assert stats == {
        "freezing_time": 101026,
        "frozen_time": 64130,
        "memdump_time": 1213,
        "memwrite_time": 184,
        "pages_scanned": 49,
        "pages_written": 33,
        "page_pipes": 8,
        "page_pipe_bufs": 8,
    }


def test_an_unreadable_stats_image_gives_no_counters() -> None:
    assert parse_stats_image(STATS_DUMP[:20]).is_empty()
    assert parse_stats_image(b"").is_empty()


def test_the_api_restore_report_gives_the_restore_counters() -> None:
    stats = statistics_of_entry(RESTORE_REPORT).as_dict()
    assert stats["restore_time"] == 83795
    assert stats["pages_restored"] == 31
    assert stats["runtime_duration"] == 131246


def _export(tmp_path: Path) -> tuple[Path, bytes]:
    """An uncompressed export like the API's: stats-dump and a checkpoint directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("stats-dump", STATS_DUMP), ("checkpoint/pages-1.img", b"x" * 9000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = tmp_path / "export.tar"
    raw.write_bytes(buffer.getvalue())
    return raw, buffer.getvalue()


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_an_api_export_becomes_the_archive_the_cli_writes(
    tmp_path: Path, compression: Compression
) -> None:
    raw, tar = _export(tmp_path)
    out = tmp_path / "archive"
    size, sha256, stats = finish_export(raw, out, compression)
    written = out.read_bytes()
    assert (size, sha256) == (len(written), hashlib.sha256(written).hexdigest())
    plain = {
        "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
        "gzip": gzip.decompress,
        "none": lambda b: b,
    }[compression](written)
    assert plain == tar
    if compression == "zstd":
        assert written.startswith(b"\x28\xb5\x2f\xfd")
    assert stats.as_dict()["frozen_time"] == 64130


def test_an_export_without_statistics_still_exports(tmp_path: Path) -> None:
    raw = tmp_path / "export.tar"
    with tarfile.open(raw, "w"):
        pass
    assert statistics_in(raw).is_empty()
    assert statistics_in(tmp_path / "missing.tar").is_empty()


def test_api_errors_read_as_the_cli_prints_them() -> None:
    body = json.dumps(
        {
            "cause": "no such container",
            "message": 'no container with name or ID "x" found: no such container',
            "response": 404,
        }
    ).encode()
    message = error_message(404, body)
    assert message == 'no container with name or ID "x" found: no such container'
    output = podman_parsing.api_output("container inspect x", LibpodError(404, message))
    assert output.stderr == f"Error: {message}\n"
    assert podman_parsing.is_no_such_container(output.stderr)
    assert error_message(502, b"bad gateway") == "bad gateway"
    assert error_message(500, b"") == "HTTP 500"


def test_api_parameters_say_what_the_cli_flags_say() -> None:
    options = CheckpointOptions(leave_running=True, tcp_established=True)
    assert podman_parsing.checkpoint_params(options) == {
        "leaveRunning": True,
        "tcpEstablished": True,
        "fileLocks": False,
    }
    assert podman_parsing.restore_params(name=None, tcp_established=False, file_locks=True) == {
        "printStats": True,
        "tcpEstablished": False,
        "fileLocks": True,
    }
    assert podman_parsing.restore_params(name="web", tcp_established=False, file_locks=False)[
        "name"
    ] == ("web")


def test_an_api_inspect_reads_like_the_cli_one() -> None:
    item = {
        "Id": "a" * 64,
        "Name": "web",
        "Image": "b" * 64,
        "ImageName": "localhost/web:1",
        "Created": "2026-11-26T01:02:51.308150063Z",
        "State": {"Status": "running", "Running": True, "Pid": 42},
        "Config": {"Labels": {"app": "web"}},
    }
    assert podman_parsing.container_info(item) == podman_parsing.parse_container_inspect(
        json.dumps([item])
    )


def test_the_client_maps_answers_and_a_missing_service(tmp_path: Path) -> None:
    socket = tmp_path / "podman.sock"
    routes = web.RouteTableDef()

    @routes.get("/v4.0.0/libpod/containers/{name}/json")
    async def inspect(request: web.Request) -> web.Response:
        if request.match_info["name"] == "web":
            return web.json_response({"Id": "a" * 64})
        return web.json_response(
            {"cause": "no such container", "message": "no such container", "response": 404},
            status=404,
        )

    @routes.delete("/v4.0.0/libpod/containers/{name}")
    async def remove(request: web.Request) -> web.Response:
        assert request.query["force"] == "true"
        return web.json_response({"message": "container is busy", "response": 500}, status=500)

    async def scenario() -> None:
        client = Libpod(socket)
        with pytest.raises(ServiceUnavailable):
            await client.inspect("web", limit=2)
        assert not client.usable  # the CLI is used for a while
        await client.stop()
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        try:
            client = Libpod(socket)
            assert await client.inspect("web", limit=2) == {"Id": "a" * 64}
            assert await client.inspect("gone", limit=2) is None
            with pytest.raises(LibpodError) as refused:
                await client.remove("web", limit=2)
            assert (refused.value.status, refused.value.message) == (500, "container is busy")
            assert client.answered == 3
            await client.stop()
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
