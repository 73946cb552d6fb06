"""The one way a failure reaches the user: a ``PluginError`` told as one ``error: `` line.

The exit code says which kind of failure it was, so a script can tell a
migration that failed (a result: 1) from a command that could not run:

====  ==========================================================================
 0    success: the migration, checkpoint, restore or cancel did what was asked
 1    a result: it failed, was refused by the operator, or was cancelled
 2    usage: a wrong flag, an invalid manifest or file; nothing was sent
 3    the API: unreachable, unauthorized, forbidden, not found, or the request
      refused by the API server (schema, CEL, immutable spec)
130   interrupted (Ctrl-C); what was created goes on in the cluster
====  ==========================================================================

API errors become ``ApiError`` in :mod:`ferry_kubectl.kube` (the only module
that talks to the API server), naming the resource the user asked about, so
that no command shows a Python traceback or a raw HTTP reason.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
#: What the shell reports for a process stopped with Ctrl-C.
EXIT_INTERRUPTED = 130

#: The table ``--help`` and the README show.
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the migration, checkpoint, restore or cancel failed or was refused"),
    (EXIT_USAGE, "usage: a wrong flag or an invalid manifest; nothing was sent"),
    (EXIT_API, "the Kubernetes API: unreachable, forbidden, not found, or the request refused"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); what was created goes on in the cluster"),
)


class PluginError(Exception):
    """A failure the user can act on; its message is printed after ``error: ``."""

    exit_code: ClassVar[int] = EXIT_USAGE


class ApiError(PluginError):
    """The API server failed or refused a request, or could not be reached."""

    exit_code: ClassVar[int] = EXIT_API
