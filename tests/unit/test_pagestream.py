"""The page-server data path's pure parts: CRIU's config, its arguments, paths, identities.

The config and argument shapes are the ones that worked on the simulated nodes
(podman 5.4.2, crun 1.21, CRIU 4.2.1): ``default.conf`` with ``page-server``,
``address``, ``port`` and the TLS lines; ``criu page-server`` with
``--status-fd`` and ``--tls-*=`` options.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ferry_helper import criu_tls, pagestream
from ferry_helper.drivers import podman_parsing

CONTAINER_ID = "9066fe4df64660dec823be154e7150e46d9413608a6f19e0d9bcc1268372ddd0"
TLS = criu_tls.TlsFiles(
    cert=Path("/var/lib/ferry-helper/tls/cert.pem"),
    key=Path("/var/lib/ferry-helper/tls/key.pem"),
    peer_cert=Path("/var/lib/ferry-helper/tls/peer.pem"),
)


def test_dump_config_sends_pages_to_the_page_server() -> None:
    text = pagestream.dump_config("10.213.0.11", 27000, None)
    assert text.splitlines() == [
        pagestream.CONFIG_MARK,
        "page-server",
        "address 10.213.0.11",
        "port 27000",
    ]


def test_dump_config_with_tls_pins_the_peer_and_skips_names() -> None:
    lines = pagestream.dump_config("10.213.0.11", 27000, TLS).splitlines()
    assert lines[4:] == [
        "tls",
        "tls-cacert /var/lib/ferry-helper/tls/peer.pem",
        "tls-cert /var/lib/ferry-helper/tls/cert.pem",
        "tls-key /var/lib/ferry-helper/tls/key.pem",
        "tls-no-cn-verify",
    ]


@pytest.mark.parametrize(
    ("address", "port"), [("node-b", 27000), ("10.0.0.1", 0), ("10.0.0.1", 70000)]
)
def test_dump_config_refuses_names_and_bad_ports(address: str, port: int) -> None:
    with pytest.raises(ValueError, match=r"does not appear|not a TCP port"):
        pagestream.dump_config(address, port, None)


def test_dump_config_refuses_paths_criu_would_split() -> None:
    spaced = criu_tls.TlsFiles(cert=Path("/a b/c.pem"), key=TLS.key, peer_cert=TLS.peer_cert)
    with pytest.raises(ValueError, match="CRIU config"):
        pagestream.dump_config("10.0.0.1", 27000, spaced)


def test_page_server_args() -> None:
    args = pagestream.page_server_args(
        Path("/images"),
        work_dir=Path("/staging/uid"),
        address="10.213.0.11",
        port=27000,
        tls=TLS,
        status_fd=7,
    )
    assert args[:2] == ["criu", "page-server"]
    assert args[args.index("--images-dir") + 1] == "/images"
    assert args[args.index("--work-dir") + 1] == "/staging/uid"
    assert args[args.index("--status-fd") + 1] == "7"
    assert "-d" not in args  # the helper owns the process
    assert args[-5:] == [
        "--tls",
        "--tls-cacert=/var/lib/ferry-helper/tls/peer.pem",
        "--tls-cert=/var/lib/ferry-helper/tls/cert.pem",
        "--tls-key=/var/lib/ferry-helper/tls/key.pem",
        "--tls-no-cn-verify",
    ]


def test_page_server_args_without_tls_have_none() -> None:
    args = pagestream.page_server_args(
        Path("/i"), work_dir=Path("/w"), address="10.0.0.1", port=1, tls=None, status_fd=3
    )
    assert not [a for a in args if a.startswith("--tls")]


def test_container_checkpoint_dir() -> None:
    path = pagestream.container_checkpoint_dir(
        Path("/var/lib/containers/storage"), "overlay", CONTAINER_ID
    )
    assert path == Path(
        f"/var/lib/containers/storage/overlay-containers/{CONTAINER_ID}/userdata/checkpoint"
    )
    with pytest.raises(ValueError, match="not a full container ID"):
        pagestream.container_checkpoint_dir(Path("/s"), "overlay", "../../etc")
    with pytest.raises(ValueError, match="not a graph driver"):
        pagestream.container_checkpoint_dir(Path("/s"), "../x", CONTAINER_ID)


def test_page_files_are_the_pagemaps_and_pages_only(tmp_path: Path) -> None:
    for name, size in [
        ("pagemap-1.img", 450),
        ("pages-65537.img", 8192),
        ("pagemap-shmem-3.img", 10),
        ("pages-2.img", 4096),
        ("core-1.img", 2000),
        ("page-server.log", 99),
    ]:
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "pages-9.img.partial").write_bytes(b"x")
    names = [p.name for p in pagestream.page_files(tmp_path)]
    assert names == ["pagemap-1.img", "pagemap-shmem-3.img", "pages-2.img", "pages-65537.img"]
    assert pagestream.received_pages(tmp_path) == 8192 + 4096
    assert pagestream.page_files(tmp_path / "missing") == []


def test_parse_store_info() -> None:
    text = json.dumps(
        {"store": {"graphRoot": "/var/lib/containers/storage", "graphDriverName": "overlay"}}
    )
    assert podman_parsing.parse_store_info(text) == (Path("/var/lib/containers/storage"), "overlay")


def test_a_restore_onto_pages_keeps_them_and_the_id() -> None:
    args = podman_parsing.import_args(
        Path("/a.tar"), name=None, tcp_established=False, file_locks=False, keep=True
    )
    assert "--keep" in args
    assert "--name" not in args


def test_identity_is_a_self_signed_anchor_for_a_while() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    identity = criu_tls.make_identity("10.213.0.11", now=now)
    cert = x509.load_pem_x509_certificate(identity.cert_pem)
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.11")]
    assert cert.not_valid_after_utc - now == criu_tls.IDENTITY_LIFETIME
    other = criu_tls.make_identity("10.213.0.11", now=now)
    assert other.key_pem != identity.key_pem  # one key per migration and end


def test_identity_files_are_private_and_made_once(tmp_path: Path) -> None:
    files = criu_tls.read_or_make_identity(tmp_path / "tls", "10.0.0.1")
    criu_tls.trust_peer(files, b"PEER")
    assert files.peer_cert.read_bytes() == b"PEER"
    for path in (files.cert, files.key, files.peer_cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    # A repeated step gets the same identity, so the peer's pin stays valid.
    again = criu_tls.read_or_make_identity(tmp_path / "tls", "10.0.0.1")
    assert again.cert.read_bytes() == files.cert.read_bytes()


def test_only_a_certificate_is_taken_as_one() -> None:
    pem = criu_tls.make_identity("10.0.0.1").cert_pem.decode()
    assert criu_tls.check_certificate(pem) == pem.encode()
    with pytest.raises(ValueError, match="not a PEM certificate"):
        criu_tls.check_certificate("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_dump_config_file_lives_only_inside_the_block(tmp_path: Path) -> None:
    path = tmp_path / "criu" / "default.conf"
    text = pagestream.dump_config("10.0.0.1", 27000, None)
    seen = asyncio.run(_with_config(text, path))
    assert seen == text
    assert not path.exists()


async def _with_config(text: str, path: Path, *, fail: bool = False) -> str:
    async with pagestream.DumpConfig(text, path=path):
        seen = await asyncio.to_thread(path.read_text)
        mode = await asyncio.to_thread(lambda: path.stat().st_mode)
        assert stat.S_IMODE(mode) == 0o600
        if fail:
            raise RuntimeError("dump failed")
        return seen


def test_dump_config_is_removed_after_a_failed_dump(tmp_path: Path) -> None:
    path = tmp_path / "default.conf"
    with pytest.raises(RuntimeError, match="dump failed"):
        asyncio.run(_with_config(pagestream.dump_config("10.0.0.1", 1, None), path, fail=True))
    assert not path.exists()


def test_a_config_the_helper_did_not_write_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "default.conf"
    path.write_text("tcp-established\n")
    with pytest.raises(pagestream.PageStreamError, match="not written by ferry-helper"):
        asyncio.run(_with_config(pagestream.dump_config("10.0.0.1", 1, None), path))
    assert path.read_text() == "tcp-established\n"


FAKE_CRIU = """
# A stand-in for `criu page-server`: says it is ready on --status-fd, or dies first.
import os, sys, time
fd = int(sys.argv[sys.argv.index("--status-fd") + 1])
if MODE == "die":
    sys.exit(1)
os.write(fd, b"\\0")
time.sleep(0.2 if MODE == "ok" else 60)
"""


def _fake_criu(tmp_path: Path, mode: str) -> str:
    script = tmp_path / f"criu-{mode}"
    script.write_text(f"#!{sys.executable}\nMODE = {mode!r}\n{FAKE_CRIU}")
    script.chmod(0o755)
    return str(script)


def _server(tmp_path: Path, mode: str) -> pagestream.PageServer:
    return pagestream.PageServer(
        tmp_path,
        work_dir=tmp_path,
        address="127.0.0.1",
        port=1,
        tls=None,
        criu=_fake_criu(tmp_path, mode),
    )


def test_page_server_is_ready_then_ends_by_itself(tmp_path: Path) -> None:
    async def serve() -> int:
        async with _server(tmp_path, "ok") as server:
            async with asyncio.timeout(5):
                return await server.finished()

    assert asyncio.run(serve()) == 0


def test_a_page_server_whose_dump_never_comes_is_stopped(tmp_path: Path) -> None:
    async def serve() -> int | None:
        server = _server(tmp_path, "wait")
        await server.start()
        assert server.returncode is None
        await server.stop()
        return server.returncode

    assert asyncio.run(serve()) == -9


def test_a_page_server_that_dies_before_listening_is_an_error(tmp_path: Path) -> None:
    (tmp_path / pagestream.PAGE_SERVER_LOG).write_text("Error: bind: Address in use\n")

    async def serve() -> None:
        async with _server(tmp_path, "die"):
            pass

    with pytest.raises(pagestream.PageStreamError, match="Address in use"):
        asyncio.run(serve())
