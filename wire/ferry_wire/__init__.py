"""The wire protocol between the operator and the node-helpers: one typed contract.

Both sides import this package and nothing of each other. Every operation has
a request model and a reply model (frozen pydantic, camelCase on the wire, as
the CRDs are); a remote error carries a :class:`Reason`; framing and host-key
pinning live here too, so the two ends cannot drift.

How one operation travels (see :mod:`ferry_wire.framing`): one SSH ``exec``
request whose command is the operation's name; standard input starts with one
JSON line (the request), followed by raw bytes for the receiving operations;
standard output is JSON lines, any number of ``progress`` events and then one
``result`` (the reply) or ``error`` (a reason and a message).

Version skew is decided by :data:`PROTOCOL_VERSION`, which each helper
announces in its NodeHelper status: an operator refuses helpers older than
:data:`MIN_PROTOCOL_VERSION`, never guesses from an error's text.
"""

from ferry_wire.base import Peer, Reply, Request, WireModel
from ferry_wire.errors import Reason, RemoteError
from ferry_wire.operations import OPERATOR_USER, PEER_USER, Operation, allowed

#: The protocol this package speaks. 1: untyped dicts (before versions were announced);
#: 2: every request and reply typed, camelCase, errors with a Reason;
#: 3: stored archives sealed at rest, their sha256 (and a registry image's digest)
#: sent with every restore and send, checked before anything runs.
#: 4: list-containers (NodeEvacuation), bandwidth limits on the streams.
PROTOCOL_VERSION = 4
#: The oldest helper protocol an operator of this package drives (an older helper would
#: refuse the fields a request may now carry, or not know list-containers).
MIN_PROTOCOL_VERSION = 4

__all__ = [
    "MIN_PROTOCOL_VERSION",
    "OPERATOR_USER",
    "PEER_USER",
    "PROTOCOL_VERSION",
    "Operation",
    "Peer",
    "Reason",
    "RemoteError",
    "Reply",
    "Request",
    "WireModel",
    "allowed",
]
