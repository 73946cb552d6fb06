"""The Ferry operator: kopf handlers that drive ContainerMigrations through node-helpers."""
