"""The one way a failure reaches the user: a ``PluginError`` told as one ``error: `` line.

API errors become PluginErrors in :mod:`ferry_kubectl.kube` (the only module that
talks to the API server), naming the resource the user asked about, so that no
command shows a Python traceback or a raw HTTP reason.
"""

from __future__ import annotations


class PluginError(Exception):
    """A failure the user can act on; its message is printed after ``error: ``."""
