"""Prometheus metrics: migrations by outcome, downtime, duration and bytes moved."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MIGRATIONS = Counter(
    "ferry_migrations_total",
    "ContainerMigrations finished, by outcome and reason",
    ["outcome", "reason"],
)
DOWNTIME = Histogram(
    "ferry_migration_downtime_seconds",
    "Time a migrated container was frozen",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
DURATION = Histogram(
    "ferry_migration_duration_seconds",
    "Time from a migration's start to its end",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
BYTES = Counter("ferry_migration_bytes_total", "Checkpoint archive bytes sent between nodes")
