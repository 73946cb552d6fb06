"""What each wire operation does on this node.

:class:`~.dispatcher.Operations` takes a typed request (parsed by the SSH
server) and runs the handler of its concern under the rules every request
passes first (one step per UID at a time, closed migrations stay closed, a
peer only into its grant). Handlers take their typed request and a
:class:`~.context.Channel`, return their typed reply, and raise
``ferry_wire.RemoteError`` with a reason users read as a condition reason.
"""

from .context import Channel, NodeContext
from .dispatcher import KeyedLocks, Operations

__all__ = ["Channel", "KeyedLocks", "NodeContext", "Operations"]
