"""PodMigration: a pod's containers moved through the kubelets' checkpoint API and containerd."""

from .machine import PodMigrationMachine

__all__ = ["PodMigrationMachine"]
