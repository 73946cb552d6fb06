"""Stored checkpoints sealed at rest: the STREAM format, and the keys a node reads.

Every way a sealed file can be changed (a byte flipped in any chunk or in
its header, cut short, extended, chunks swapped) must fail to open, name
what failed, and leave no plaintext behind; a key the node lacks is named by
its id, with the ids the node has.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

import pytest
from ferry_helper.checkpoint_keys import KEY_BYTES, Key, KeyDirectory, KeyFileError, Keyring
from ferry_helper.sealing import (
    CHUNK_BYTES,
    MAGIC,
    TAG_BYTES,
    KeyNotFound,
    NotSealed,
    Tampered,
    file_sha256,
    is_sealed,
    open_sealed,
    read_header,
    seal,
)
from ferry_helper.settings import Settings

KEY = Key("key", bytes(range(KEY_BYTES)))
OLD = Key("old", bytes(range(100, 100 + KEY_BYTES)))
SEGMENT = CHUNK_BYTES + TAG_BYTES
MiB = 1 << 20


def sealed_file(tmp_path: Path, size: int, key: Key = KEY) -> tuple[Path, bytes]:
    plain = os.urandom(size)
    src = tmp_path / "plain.tar"
    src.write_bytes(plain)
    dst = tmp_path / "sealed.tar"
    seal(src, dst, key)
    return dst, plain


def chunks_of(path: Path) -> tuple[bytes, list[bytes]]:
    data = path.read_bytes()
    header = len(read_header(path).raw)
    body = data[header:]
    return data[:header], [body[i : i + SEGMENT] for i in range(0, len(body), SEGMENT)]


def refused(tmp_path: Path, sealed: Path, keys: Keyring | None = None) -> Exception:
    out = tmp_path / "opened.tar"
    with pytest.raises((Tampered, KeyNotFound, NotSealed)) as error:
        open_sealed(sealed, out, keys or Keyring((KEY,)))
    assert not out.exists(), "nothing of the plaintext where a restore would read it"
    assert not list(tmp_path.glob("*.partial")), "nor beside it"
    return error.value


@pytest.mark.parametrize(
    "size", [0, 1, MiB, 3 * MiB + MiB // 2], ids=["empty", "1B", "1MiB", "3.5MiB"]
)
def test_a_sealed_file_opens_to_what_was_sealed(tmp_path: Path, size: int) -> None:
    sealed, plain = sealed_file(tmp_path, size)
    assert is_sealed(sealed)
    assert not is_sealed(tmp_path / "plain.tar")
    header = read_header(sealed)
    assert sealed.read_bytes().startswith(MAGIC)
    assert (header.key_id, header.key_name, header.chunk_bytes) == (KEY.id, "key", CHUNK_BYTES)
    chunks = max(1, -(-size // CHUNK_BYTES))
    assert sealed.stat().st_size == len(header.raw) + size + chunks * TAG_BYTES
    assert size < 64 or plain[:64] not in sealed.read_bytes()
    out = tmp_path / "opened.tar"
    assert open_sealed(sealed, out, Keyring((OLD, KEY))).key_id == KEY.id
    assert out.read_bytes() == plain
    assert oct(sealed.stat().st_mode & 0o777) == oct(0o600)
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)


def test_sealing_in_place_replaces_the_plaintext_and_measures_the_sealed_file(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "checkpoint.tar"
    plain = os.urandom(2 * MiB + 5)
    archive.write_bytes(plain)
    result = seal(archive, archive, KEY)
    assert is_sealed(archive)
    assert result.size_bytes == archive.stat().st_size
    assert result.sha256 == file_sha256(archive)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.tar"], "no temporary left"
    open_sealed(archive, tmp_path / "out", Keyring((KEY,)))
    assert (tmp_path / "out").read_bytes() == plain


def test_two_seals_of_one_file_share_nothing(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    src.write_bytes(b"same bytes" * 1000)
    first, second = tmp_path / "a", tmp_path / "b"
    seal(src, first, KEY)
    seal(src, second, KEY)
    one, other = read_header(first), read_header(second)
    assert (one.salt, one.prefix) != (other.salt, other.prefix)
    assert first.read_bytes()[len(one.raw) :] != second.read_bytes()[len(other.raw) :]


@pytest.mark.parametrize("chunk", [0, 1, 2, 3])
def test_a_byte_flipped_in_any_chunk_is_found_and_named(tmp_path: Path, chunk: int) -> None:
    sealed, _ = sealed_file(tmp_path, 3 * MiB + MiB // 2)
    data = bytearray(sealed.read_bytes())
    header = len(read_header(sealed).raw)
    data[header + chunk * SEGMENT + 1000] ^= 0x01
    sealed.write_bytes(bytes(data))
    error = refused(tmp_path, sealed)
    assert isinstance(error, Tampered)
    assert "tampered or truncated" in str(error)
    assert f"chunk {chunk}" in str(error)


def test_a_flipped_tag_is_found(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 10)
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 0x80
    sealed.write_bytes(bytes(data))
    assert isinstance(refused(tmp_path, sealed), Tampered)


@pytest.mark.parametrize(
    "cut",
    ["last chunk", "mid chunk", "last byte", "all chunks", "header"],
)
def test_a_truncated_file_is_found(tmp_path: Path, cut: str) -> None:
    sealed, _ = sealed_file(tmp_path, 3 * MiB + MiB // 2)
    header, chunks = chunks_of(sealed)
    data = {
        "last chunk": header + b"".join(chunks[:-1]),
        "mid chunk": header + b"".join(chunks[:2]) + chunks[2][: SEGMENT // 2],
        "last byte": header + b"".join(chunks)[:-1],
        "all chunks": header,
        "header": header[:-3],
    }[cut]
    sealed.write_bytes(data)
    error = refused(tmp_path, sealed)
    assert isinstance(error, Tampered)
    assert "truncated" in str(error)


def test_a_file_cut_at_a_chunk_boundary_of_whole_chunks_is_found(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 2 * MiB)  # two full chunks, the second the last
    header, chunks = chunks_of(sealed)
    assert [len(c) for c in chunks] == [SEGMENT, SEGMENT]
    sealed.write_bytes(header + chunks[0])
    error = refused(tmp_path, sealed)
    assert "chunk 0 (the last) does not authenticate" in str(error)


@pytest.mark.parametrize("extra", ["a copy of the first chunk", "a copy of the last", "bytes"])
def test_a_file_extended_is_found(tmp_path: Path, extra: str) -> None:
    sealed, _ = sealed_file(tmp_path, 2 * MiB + 100)
    header, chunks = chunks_of(sealed)
    more = {"a copy of the first chunk": chunks[0], "a copy of the last": chunks[-1]}
    sealed.write_bytes(header + b"".join(chunks) + more.get(extra, b"\0" * 64))
    error = refused(tmp_path, sealed)
    assert isinstance(error, Tampered)
    assert "chunk 2" in str(error), "the old last chunk is no longer what was sealed"


def test_a_file_of_whole_chunks_extended_by_a_chunk_is_found(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 2 * MiB)
    header, chunks = chunks_of(sealed)
    sealed.write_bytes(header + b"".join(chunks) + chunks[0])
    error = refused(tmp_path, sealed)
    assert "chunk 1 does not authenticate" in str(error), "sealed as the last, read as not"


def test_two_chunks_swapped_are_found(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 3 * MiB + 1)
    header, chunks = chunks_of(sealed)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    sealed.write_bytes(header + b"".join(chunks))
    error = refused(tmp_path, sealed)
    assert "chunk 0 does not authenticate" in str(error)


@pytest.mark.parametrize(
    ("field", "offset", "found"),
    [
        ("magic", 0, NotSealed),
        ("key id", 10, KeyNotFound),
        ("salt", 18, Tampered),
        ("nonce prefix", 50, Tampered),
        ("chunk size", 59, Tampered),
        ("key name", 62, Tampered),
    ],
)
def test_a_changed_header_is_found(
    tmp_path: Path, field: str, offset: int, found: type[Exception]
) -> None:
    sealed, _ = sealed_file(tmp_path, MiB + 7)
    data = bytearray(sealed.read_bytes())
    data[offset] ^= 0x04
    sealed.write_bytes(bytes(data))
    assert isinstance(refused(tmp_path, sealed), found), field


def test_a_key_the_node_lacks_is_named_with_those_it_has(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 100, key=OLD)
    error = refused(tmp_path, sealed, Keyring((KEY,), rejected=("bad: not 32 bytes",)))
    assert isinstance(error, KeyNotFound)
    assert str(error) == (
        f"the checkpoint was encrypted with key {OLD.id} (old); this node has {KEY.id} (key) "
        "(ignored: bad: not 32 bytes) (checkpoints.encryption.secretName)"
    )
    none = refused(tmp_path, sealed, Keyring())
    assert f"key {OLD.id} (old); this node has no keys (" in str(none)


def test_a_key_with_the_same_name_but_other_bytes_does_not_open(tmp_path: Path) -> None:
    sealed, _ = sealed_file(tmp_path, 100)
    impostor = Key("key", bytes(KEY_BYTES))
    assert impostor.id != KEY.id
    assert isinstance(refused(tmp_path, sealed, Keyring((impostor,))), KeyNotFound)


def test_a_plain_file_is_not_sealed(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"checkpoint/")
    assert isinstance(refused(tmp_path, plain), NotSealed)
    (tmp_path / "short").write_bytes(b"FERRY")
    assert not is_sealed(tmp_path / "short")


# -- keys


def secret_volume(tmp_path: Path, keys: dict[str, bytes]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: ``..data`` and symlinks to it."""
    root = tmp_path / "checkpoint-keys"
    data = root / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    for name, secret in keys.items():
        (data / name).write_bytes(secret)
    (root / "..data").symlink_to(data.name)
    for name in keys:
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_the_key_id_is_an_hmac_of_the_key_and_reveals_nothing() -> None:
    expected = hmac.new(KEY.secret, b"ferry checkpoint key id", hashlib.sha256).hexdigest()[:16]
    assert KEY.id == expected
    assert KEY.secret.hex() not in repr(KEY)
    assert len(KEY.id) == 16


def test_keys_are_read_from_a_mounted_secret_at_each_use(tmp_path: Path) -> None:
    root = secret_volume(tmp_path, {"key": KEY.secret, "old": OLD.secret})
    keys = KeyDirectory(root, "key")
    assert keys.active() == KEY
    assert [k.name for k in keys.keyring().keys] == ["key", "old"], "no ..data entries"
    rotated = os.urandom(KEY_BYTES)
    (root / "..data" / "key").write_bytes(rotated)
    assert keys.active().secret == rotated, "a rotated Secret is seen without a restart"
    assert KeyDirectory(root, "old").active() == OLD


def test_a_key_that_is_no_key_is_refused_clearly(tmp_path: Path) -> None:
    root = secret_volume(tmp_path, {"key": KEY.secret.hex().encode(), "good": OLD.secret})
    with pytest.raises(
        KeyFileError, match=r"'key' holds more than 32 bytes; a key is exactly 32 raw"
    ) as bad:
        KeyDirectory(root, "key").active()
    assert not bad.value.missing
    ring = KeyDirectory(root, "key").keyring()
    assert [k.name for k in ring.keys] == ["good"]
    assert ring.rejected == ("key: not 32 bytes",)
    with pytest.raises(
        KeyFileError, match=r"no checkpoint key 'new' in .* \(the keys there"
    ) as gone:
        KeyDirectory(root, "new").active()
    assert gone.value.missing
    with pytest.raises(KeyFileError) as no_dir:
        KeyDirectory(tmp_path / "nowhere").active()
    assert no_dir.value.missing
    assert KeyDirectory(tmp_path / "nowhere").keyring() == Keyring()
    with pytest.raises(KeyFileError, match="'short' holds 31 bytes"):
        Key("short", bytes(31))
    with pytest.raises(ValueError, match="FERRY_CHECKPOINT_KEY"):
        KeyDirectory(root, "../etc/shadow")


def test_the_helpers_settings_name_the_keys_and_both_are_optional(tmp_path: Path) -> None:
    env = {"FERRY_NODE_NAME": "n", "FERRY_ADDRESS": "10.0.0.1"}
    assert Settings.from_env(env).checkpoint_keys is None
    configured = Settings.from_env({**env, "FERRY_CHECKPOINT_KEYS_DIR": str(tmp_path)})
    assert configured.checkpoint_keys == KeyDirectory(tmp_path, "key")
    named = {**env, "FERRY_CHECKPOINT_KEYS_DIR": str(tmp_path), "FERRY_CHECKPOINT_KEY": "k2"}
    assert Settings.from_env(named).checkpoint_keys == KeyDirectory(tmp_path, "k2")
    with pytest.raises(ValueError, match="FERRY_CHECKPOINT_KEY"):
        Settings.from_env({**named, "FERRY_CHECKPOINT_KEY": "a/b"})


def test_throughput_is_reported(tmp_path: Path) -> None:
    """A rough figure (``pytest -s`` shows it); nothing is asserted about time."""
    size = 32 * MiB
    src = tmp_path / "plain"
    src.write_bytes(os.urandom(size))
    started = time.perf_counter()
    seal(src, tmp_path / "sealed", KEY)
    sealed = time.perf_counter() - started
    started = time.perf_counter()
    open_sealed(tmp_path / "sealed", tmp_path / "opened", Keyring((KEY,)))
    opened = time.perf_counter() - started
    print(f"\nseal {size / MiB / sealed:.0f} MiB/s, open {size / MiB / opened:.0f} MiB/s")
    assert (tmp_path / "opened").stat().st_size == size
