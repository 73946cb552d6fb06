"""A pod's checkpoint on the helper, the pure parts: the bundle, the checkpoint image's
OCI layout, ctr's answers, image references. No ctr, no kubelet."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from archives import add_special, checkpoint_archive
from ferry_helper import checkpoint_image, pod_bundle
from ferry_helper.archive_check import UnsafeArchive
from ferry_helper.cri import parse_server_version, parse_tasks, restores_checkpoint_images
from ferry_helper.criu_stats import CriuStatistics
from ferry_helper.operations.pods import checkpoint_reference

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
# A reference as the distribution spec (and containerd) parse it: lower-case name
# components separated by [._-] or __, then a tag.
REFERENCE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r":[\w][\w.-]{0,127}$"
)


def _archive(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _layout(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the checkpoint image


def test_the_layout_is_an_index_whose_manifest_descriptor_names_the_container(
    tmp_path: Path,
) -> None:
    archive = checkpoint_archive()
    out = tmp_path / "image.tar"
    blob = checkpoint_image.write_layout_file(
        _archive(tmp_path, "a.tar", archive),
        out,
        container="counter",
        reference="localhost/ferry-checkpoint/ns-web-counter:0b6f7b8e",
        arch="amd64",
    )
    files = _layout(out)
    assert blob == checkpoint_image.Blob(_sha(archive), len(archive))
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [descriptor] = index["manifests"]
    assert descriptor["annotations"] == {
        "org.criu.checkpoint.container.name": "counter",
        "org.opencontainers.image.ref.name": "localhost/ferry-checkpoint/ns-web-counter:0b6f7b8e",
        "io.containerd.image.name": "localhost/ferry-checkpoint/ns-web-counter:0b6f7b8e",
    }
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_bytes = files[f"blobs/sha256/{descriptor['digest'][7:]}"]
    assert (_sha(manifest_bytes), len(manifest_bytes)) == (descriptor["digest"], descriptor["size"])
    manifest = json.loads(manifest_bytes)
    assert manifest["annotations"] == {"org.criu.checkpoint.container.name": "counter"}
    [layer] = manifest["layers"]
    assert layer == {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": _sha(archive),
        "size": len(archive),
    }
    assert files[f"blobs/sha256/{layer['digest'][7:]}"] == archive, "the archive as it is"
    config_bytes = files[f"blobs/sha256/{manifest['config']['digest'][7:]}"]
    assert _sha(config_bytes) == manifest["config"]["digest"]
    assert json.loads(config_bytes)["rootfs"] == {"type": "layers", "diff_ids": [_sha(archive)]}
    # index.json last: containerd reads the blobs it names from the same tar.
    with tarfile.open(out) as tar:
        assert tar.getnames()[-1] == "index.json"


class _ChunkedOnly(io.RawIOBase):
    """A stream that refuses to be read whole, and remembers its largest read."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size is not None, "read to the end"
        assert 0 < size <= checkpoint_image.CHUNK, f"read({size})"
        self.largest = max(self.largest, size)
        return self.inner.read(size)


def test_the_layer_is_streamed_in_chunks_never_read_whole() -> None:
    data = b"\1" * (3 * checkpoint_image.CHUNK + 5)
    measured = _ChunkedOnly(data)
    blob = checkpoint_image.measure(measured)
    assert blob.size == len(data)
    copied = _ChunkedOnly(data)
    out = io.BytesIO()
    checkpoint_image.write_layout(out, copied, blob, container="c", reference="x/y:1", arch="amd64")
    assert 0 < copied.largest <= checkpoint_image.CHUNK
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        layer = tar.extractfile(blob.path)
        assert layer is not None
        assert layer.read() == data


# --- the bundle


def test_a_bundle_holds_each_containers_archive_and_each_becomes_an_image(
    tmp_path: Path,
) -> None:
    web, sidecar = checkpoint_archive(), checkpoint_archive(lambda t: None) + b"\0" * 512
    out = tmp_path / "checkpoint.tar"
    blob = pod_bundle.bundle(
        [("web", _archive(tmp_path, "w", web)), ("sidecar", _archive(tmp_path, "s", sidecar))], out
    )
    raw = out.read_bytes()
    assert blob == checkpoint_image.Blob(_sha(raw), len(raw)), "what send announces"
    assert out.stat().st_mode & 0o777 == 0o600
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["web.tar", "sidecar.tar"]
    assert pod_bundle.checked_blob(out, "sidecar") == checkpoint_image.Blob(
        _sha(sidecar), len(sidecar)
    )
    image = tmp_path / "image.tar"
    pod_bundle.write_image(out, "web", image, reference="localhost/ferry-checkpoint/a-b-web:1")
    assert _layout(image)[f"blobs/sha256/{_sha(web)[7:]}"] == web


def test_a_bundle_member_missing_or_unsafe_is_refused(tmp_path: Path) -> None:
    unsafe = checkpoint_archive(lambda t: add_special(t, "x", tarfile.SYMTYPE, "/etc/shadow"))
    out = tmp_path / "checkpoint.tar"
    pod_bundle.bundle([("bad", _archive(tmp_path, "b", unsafe))], out)
    with pytest.raises(KeyError, match="no archive of container 'other'"):
        pod_bundle.checked_blob(out, "other")
    with pytest.raises(UnsafeArchive, match="symlink"):
        pod_bundle.write_image(out, "bad", tmp_path / "image.tar", reference="a/b:1")


def test_statistics_of_the_containers_are_summed() -> None:
    parts = [
        CriuStatistics(frozen_time=100, pages_written=3),
        CriuStatistics(frozen_time=50, memdump_time=7),
        CriuStatistics(),
    ]
    assert pod_bundle.summed(parts).as_dict() == {
        "frozen_time": 150,
        "pages_written": 3,
        "memdump_time": 7,
    }


def test_an_archive_without_statistics_has_empty_ones(tmp_path: Path) -> None:
    assert pod_bundle.statistics(_archive(tmp_path, "a", checkpoint_archive())).is_empty()
    assert pod_bundle.statistics(_archive(tmp_path, "b", b"not a tar")).is_empty()


# --- ctr's answers


CTR_VERSION = """Client:
  Version:  2.1.9~ds1
  Revision: 2.1.9~ds1-1
  Go version: go1.24.4

Server:
  Version:  v2.1.9
  Revision: 2.1.9~ds1-1
  UUID: 4f6f2d7e
"""


def test_the_servers_version_decides_checkpoint_images() -> None:
    assert parse_server_version(CTR_VERSION) == "v2.1.9"
    assert parse_server_version("Client:\n  Version: 2.1.9\n") is None
    assert restores_checkpoint_images("v2.1.9")
    assert restores_checkpoint_images("2.2.0~rc1")
    assert restores_checkpoint_images("3.0.0")
    assert not restores_checkpoint_images("2.0.5")
    assert not restores_checkpoint_images("1.7.27")
    assert not restores_checkpoint_images(None)


def test_tasks_are_read_from_ctr_tasks_ls() -> None:
    text = "TASK      PID     STATUS\nabc       1234    RUNNING\ndef       0       PAUSED\n"
    assert parse_tasks(text) == {"abc": "RUNNING", "def": "PAUSED"}
    assert parse_tasks("TASK    PID    STATUS\n") == {}


# --- references


@pytest.mark.parametrize(
    ("namespace", "pod", "container"),
    [("default", "web-7d9f", "app"), ("team.a", "x" * 253, "c" * 63)],
)
def test_checkpoint_references_are_valid_and_unique(
    namespace: str, pod: str, container: str
) -> None:
    reference = checkpoint_reference(namespace, pod, container, UID)
    assert REFERENCE.match(reference), reference
    assert reference.startswith("localhost/ferry-checkpoint/")
    assert reference.endswith(":0b6f7b8e")
    assert len(reference) <= 255
    other = checkpoint_reference(
        namespace, pod + "y" if len(pod) < 253 else pod[:-1], container, UID
    )
    assert other != reference
