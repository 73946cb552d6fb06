"""One ContainerMigration, from acceptance to Succeeded, Failed or Cancelled.

Read it top-down: :mod:`.machine` is the loop (guards first, then one step per
phase, the transitions in one table), :mod:`.steps` the forward steps,
:mod:`.rollback` what a failure after the freeze does, and :mod:`.context`
what a step may know, rebuilt from the resource's status after a restart.
"""

from ferry_operator.migration.machine import Migration

__all__ = ["Migration"]
