"""NodeEvacuation: every workload Ferry may move off a node, migrated within a limit.

:mod:`.plan` decides (which target next, what a child migration's ending
means for its workload), :mod:`.workloads` finds what runs on the node, and
:mod:`.controller` runs the loop a kopf daemon drives.
"""

from .controller import Evacuator

__all__ = ["Evacuator"]
