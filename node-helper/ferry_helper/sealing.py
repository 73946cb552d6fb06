"""Checkpoint archives sealed at rest: AES-256-GCM in the STREAM construction, 1 MiB chunks.

A checkpoint holds a process's whole memory, secrets included, so a node with
a checkpoint key keeps its stored archives sealed. The format is that of
Tink's streaming AEAD (AES-GCM-HKDF, segments of 1 MiB):

* a header: the magic ``FERRYSEAL1``, the id of the key (8 bytes, see
  :mod:`.checkpoint_keys`), a random 32-byte salt, a random 7-byte nonce
  prefix, the plaintext bytes per chunk (4 bytes, big-endian), and the key's
  name (1 byte of length, then UTF-8), so a node that lacks the key can say
  which one it needs;
* then the chunks: each chunk of plaintext (1 MiB, the last one shorter or
  empty) encrypted with AES-256-GCM under the file's own key,
  HKDF-SHA256(key, salt), with the nonce ``prefix || chunk index (4 bytes,
  big-endian) || 1 for the last chunk, else 0``, and the whole header as
  associated data; each sealed chunk is its ciphertext and 16-byte tag.

The index in the nonce finds chunks reordered or swapped; the last-chunk flag
finds a file cut at a chunk boundary (its new last chunk was not sealed as the
last) or extended (the old last one was); the header as associated data finds
a header changed; and a file key of its own for each file (the random salt)
keeps nonces from ever repeating under one key, whatever the number of files.

:func:`open_sealed` writes the plaintext beside its destination and renames
it into place only after every chunk authenticated: a tampered file never
yields a byte of plaintext where a restore would read it. Both directions
stream (two chunks in memory at most) and are CPU-bound: async callers run
them in a thread, and can stop them between chunks (``stop``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .checkpoint_keys import Key, Keyring

MAGIC = b"FERRYSEAL1"
#: Plaintext bytes per chunk.
CHUNK_BYTES = 1 << 20
TAG_BYTES = 16
SALT_BYTES = 32
PREFIX_BYTES = 7
KEY_ID_BYTES = 8
#: The largest chunk a header may name: what a reader is willing to hold in memory.
MAX_CHUNK_BYTES = 64 << 20
#: The chunk index is 4 bytes of the nonce.
MAX_CHUNKS = 1 << 32
#: magic, key id, salt, nonce prefix, chunk size, length of the key's name.
_FIXED = struct.Struct(f">{len(MAGIC)}s{KEY_ID_BYTES}s{SALT_BYTES}s{PREFIX_BYTES}sIB")
_FILE_KEY_INFO = b"ferry checkpoint seal"
#: How much of a file is hashed at a time.
HASH_CHUNK = 1 << 20


class SealError(Exception):
    """A sealed archive that cannot be opened (or a file that cannot be sealed)."""


class NotSealed(SealError):
    """The file does not start with the magic: it is no sealed archive."""


class Tampered(SealError):
    """A sealed archive changed since it was sealed: flipped, cut, extended or reordered."""


class Stopped(SealError):
    """The caller asked to stop between two chunks."""


class KeyNotFound(SealError):
    """The archive was sealed with a key this node does not have."""

    def __init__(self, key_id: str, key_name: str, keyring: Keyring) -> None:
        super().__init__(
            f"the checkpoint was encrypted with key {key_id} ({key_name}); this node has "
            f"{keyring.describe()} (checkpoints.encryption.secretName)"
        )
        self.key_id = key_id
        self.key_name = key_name


@dataclass(frozen=True)
class Header:
    """What precedes the chunks; all of it is authenticated with every chunk."""

    key_id: str
    key_name: str
    salt: bytes
    prefix: bytes
    chunk_bytes: int
    #: The header as written: the associated data of every chunk.
    raw: bytes

    @classmethod
    def new(cls, key: Key, *, chunk_bytes: int = CHUNK_BYTES) -> Header:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"a chunk of {chunk_bytes} bytes")
        name = key.name.encode()
        if len(name) > 255:
            raise ValueError(f"key name {key.name!r} is longer than 255 bytes")
        salt, prefix = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(PREFIX_BYTES)
        fixed = _FIXED.pack(MAGIC, bytes.fromhex(key.id), salt, prefix, chunk_bytes, len(name))
        return cls(key.id, key.name, salt, prefix, chunk_bytes, fixed + name)

    @classmethod
    def read(cls, handle: IO[bytes]) -> Header:
        """The header at the start of ``handle``, which is left at the first chunk."""
        fixed = handle.read(_FIXED.size)
        if fixed[: len(MAGIC)] != MAGIC:
            raise NotSealed("no sealed checkpoint (its magic is missing)")
        if len(fixed) < _FIXED.size:
            raise Tampered("the sealed checkpoint is truncated: its header is cut short")
        _, key_id, salt, prefix, chunk_bytes, name_length = _FIXED.unpack(fixed)
        name = handle.read(name_length)
        if len(name) < name_length:
            raise Tampered("the sealed checkpoint is truncated: its header is cut short")
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise Tampered(f"the sealed checkpoint's header was changed: chunks of {chunk_bytes}")
        return cls(
            key_id=key_id.hex(),
            key_name=name.decode(errors="replace"),
            salt=salt,
            prefix=prefix,
            chunk_bytes=chunk_bytes,
            raw=fixed + name,
        )

    def cipher(self, key: Key) -> AESGCM:
        """AES-256-GCM under this file's own key, derived from ``key`` and the salt."""
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.salt, info=_FILE_KEY_INFO)
        return AESGCM(kdf.derive(key.secret))

    def nonce(self, index: int, *, last: bool) -> bytes:
        if index >= MAX_CHUNKS:
            raise SealError(f"more than {MAX_CHUNKS} chunks")
        return self.prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


@dataclass(frozen=True)
class SealedFile:
    """A file as sealed: what is stored, and sent, is this."""

    size_bytes: int
    sha256: str
    header: Header


def is_sealed(path: Path) -> bool:
    """Whether ``path`` starts with the magic of a sealed archive."""
    with path.open("rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def seal(
    src: Path,
    dst: Path,
    key: Key,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    stop: threading.Event | None = None,
) -> SealedFile:
    """Seal ``src`` into ``dst`` with ``key`` (``dst`` may be ``src``: sealed in place).

    ``dst`` is replaced only once the sealed file is whole and on disk
    (fsync'd, then renamed over); its size and sha256 are measured while it
    is written.
    """
    header = Header.new(key, chunk_bytes=chunk_bytes)
    aead = header.cipher(key)
    digest = hashlib.sha256(header.raw)
    size = len(header.raw)
    with src.open("rb") as plain, _replacing(dst, durable=True) as out:
        out.write(header.raw)
        index = 0
        chunk = _read_full(plain, chunk_bytes)
        while True:
            _check(stop)
            following = _read_full(plain, chunk_bytes) if len(chunk) == chunk_bytes else b""
            last = not following
            sealed = aead.encrypt(header.nonce(index, last=last), chunk, header.raw)
            out.write(sealed)
            digest.update(sealed)
            size += len(sealed)
            if last:
                break
            chunk, index = following, index + 1
    return SealedFile(size_bytes=size, sha256=digest.hexdigest(), header=header)


def read_header(path: Path) -> Header:
    """The header of the sealed archive at ``path`` (``NotSealed`` if it is none)."""
    with path.open("rb") as handle:
        return Header.read(handle)


def open_sealed(
    src: Path, dst: Path, keys: Keyring, *, stop: threading.Event | None = None
) -> Header:
    """Decrypt the sealed archive ``src`` into ``dst``, with the key of ``keys`` it names.

    ``dst`` appears only once every chunk authenticated; on any failure nothing
    of the plaintext is left. Raises :class:`KeyNotFound` (the key it needs is
    not among ``keys``), :class:`Tampered` (naming the first chunk that does
    not authenticate) or :class:`NotSealed`.
    """
    with src.open("rb") as handle:
        header = Header.read(handle)
        key = keys.find(header.key_id)
        if key is None:
            raise KeyNotFound(header.key_id, header.key_name, keys)
        aead = header.cipher(key)
        segment = header.chunk_bytes + TAG_BYTES
        with _replacing(dst, durable=False) as out:
            index = 0
            current = _read_full(handle, segment)
            while True:
                _check(stop)
                following = _read_full(handle, segment) if len(current) == segment else b""
                last = not following
                if len(current) < TAG_BYTES:
                    raise Tampered(
                        f"the sealed checkpoint is tampered or truncated: chunk {index} is "
                        "missing or cut short"
                    )
                try:
                    plain = aead.decrypt(header.nonce(index, last=last), current, header.raw)
                except InvalidTag:
                    which = f"chunk {index}" + (" (the last)" if last else "")
                    raise Tampered(
                        f"the sealed checkpoint is tampered or truncated: {which} does not "
                        "authenticate"
                    ) from None
                out.write(plain)
                if last:
                    break
                current, index = following, index + 1
    return header


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, read a chunk at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("stopped")


def _read_full(handle: IO[bytes], size: int) -> bytes:
    """``size`` bytes of ``handle``, fewer only at its end."""
    data = handle.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := handle.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


@contextlib.contextmanager
def _replacing(dst: Path, *, durable: bool) -> Iterator[IO[bytes]]:
    """A private (0600) temporary file beside ``dst``, renamed over it if all goes well,
    removed otherwise; ``durable``: on disk (file and directory synced) before and after."""
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
