"""The keys that seal stored checkpoints: a directory of 32-byte files, read at each use.

The chart mounts a Secret (``checkpoints.encryption.secretName``) read-only at
``FERRY_CHECKPOINT_KEYS_DIR``: one file per key, the file's name the key's name,
its content exactly 32 random bytes (``head -c 32 /dev/urandom``), not text.
``FERRY_CHECKPOINT_KEY`` names the key new checkpoints are sealed with; every
other key in the directory still opens what it sealed, so a key is rotated by
adding a new one, making it the active one, and removing the old one once no
stored checkpoint needs it.

The files are read each time a key is needed, never cached: the kubelet
updates a mounted Secret in place, and a rotated key is used from the next
checkpoint on without restarting the helper. A key is named in messages and
records by its *id*, the first 16 hex digits of HMAC-SHA256(key,
``"ferry checkpoint key id"``), which tells keys apart and reveals nothing of
them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

#: A checkpoint key is exactly this many raw bytes (AES-256).
KEY_BYTES = 32
ID_LABEL = b"ferry checkpoint key id"
ID_HEX_DIGITS = 16
#: A key's name: a Secret's key, usable as a file name.
KEY_NAME = re.compile(r"^[-_a-zA-Z0-9][-._a-zA-Z0-9]*$")
#: The active key's name when ``FERRY_CHECKPOINT_KEY`` is not set.
DEFAULT_ACTIVE = "key"


class KeyFileError(ValueError):
    """A key that cannot be used: ``missing`` (no such file), or not a key (its size)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def key_id(secret: bytes) -> str:
    """The id of the key ``secret``: names it without revealing it."""
    return hmac.new(secret, ID_LABEL, hashlib.sha256).hexdigest()[:ID_HEX_DIGITS]


@dataclass(frozen=True)
class Key:
    """A checkpoint key: its name (the file's) and its 32 bytes."""

    name: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            size = len(self.secret)
            holds = f"{size} bytes" if size < KEY_BYTES else f"more than {KEY_BYTES} bytes"
            raise KeyFileError(
                f"checkpoint key {self.name!r} holds {holds}; a key is exactly "
                f"{KEY_BYTES} raw bytes (head -c {KEY_BYTES} /dev/urandom), not hex or base64 text",
                missing=False,
            )

    @property
    def id(self) -> str:
        return key_id(self.secret)

    def describe(self) -> str:
        return f"{self.id} ({self.name})"


@dataclass(frozen=True)
class Keyring:
    """The keys a node has, to open what any of them sealed."""

    keys: tuple[Key, ...] = ()
    #: Files of the directory that are no keys (name: why), named in messages, never used.
    rejected: tuple[str, ...] = ()

    def find(self, wanted: str) -> Key | None:
        """The key whose id is ``wanted``, if this node has it."""
        return next((key for key in self.keys if hmac.compare_digest(key.id, wanted)), None)

    def describe(self) -> str:
        """What this node has, for a message: ids and names, or ``no keys``."""
        has = ", ".join(key.describe() for key in self.keys) or "no keys"
        if self.rejected:
            has += f" (ignored: {'; '.join(self.rejected)})"
        return has


@dataclass(frozen=True)
class KeyDirectory:
    """The mounted Secret: where the keys are, and which one seals new checkpoints."""

    directory: Path
    active_name: str = DEFAULT_ACTIVE

    def __post_init__(self) -> None:
        if not KEY_NAME.match(self.active_name):
            raise ValueError(
                f"FERRY_CHECKPOINT_KEY is {self.active_name!r}: the name of a key in "
                f"{self.directory} (letters, digits, '-', '_' and '.')"
            )

    def active(self) -> Key:
        """The key new checkpoints are sealed with, read now."""
        path = self.directory / self.active_name
        try:
            secret = _read(path)
        except FileNotFoundError:
            others = ", ".join(self._names()) or "none"
            raise KeyFileError(
                f"no checkpoint key {self.active_name!r} in {self.directory} (the keys there: "
                f"{others})",
                missing=True,
            ) from None
        except OSError as error:
            raise KeyFileError(
                f"cannot read checkpoint key {path}: {error}", missing=True
            ) from None
        return Key(self.active_name, secret)

    def keyring(self) -> Keyring:
        """Every key in the directory, read now; files that are no keys are set aside."""
        keys: list[Key] = []
        rejected: list[str] = []
        for name in self._names():
            try:
                keys.append(Key(name, _read(self.directory / name)))
            except KeyFileError:
                rejected.append(f"{name}: not {KEY_BYTES} bytes")
            except OSError as error:
                rejected.append(f"{name}: {error.strerror or error}")
        return Keyring(keys=tuple(keys), rejected=tuple(rejected))

    def _names(self) -> list[str]:
        """The keys' names: the directory's files, without a Secret volume's ``..data``."""
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            return []
        return [e.name for e in entries if not e.name.startswith(".") and e.is_file()]


def _read(path: Path) -> bytes:
    """At most one byte more than a key: enough to tell that a file is none."""
    with path.open("rb") as handle:
        return handle.read(KEY_BYTES + 1)
