"""Summary of one run-one.sh output directory, as one JSON line."""

import json
import statistics
import sys
from pathlib import Path

out, mode, mib, k = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
times = {}
for name in ("source.times", "target.times"):
    for line in (out / name).read_text().split("\n"):
        if line.strip():
            key, value = line.split()
            times[key] = float(value) if "." in value else int(value)
t0 = times["freeze-start"]
rows = [
    tuple(map(int, line.split()))
    for line in (out / "series").read_text().split("\n")
    if line.strip()
]
rows = [(ts / 1e3, it, gap / 1e3) for ts, it, gap in rows]  # s, iterations, ms
end = times.get("all-memory-here", times.get("restored", t0)) + 1.5
before = [r for r in rows if t0 - 3.5 <= r[0] < t0]
migration = [r for r in rows if t0 <= r[0] <= end]
resumed = times.get("restored", t0)
during = [r[1] for r in rows if resumed + 0.1 < r[0] <= times.get("all-memory-here", resumed)]
after = [r[1] for r in rows if times.get("all-memory-here", resumed) + 0.1 < r[0] <= end]


def med(xs: list[int]) -> float | None:
    return statistics.median(xs) if xs else None


rel = {k2: round(v - t0, 3) for k2, v in times.items() if isinstance(v, float)}
print(
    json.dumps(
        {
            "mode": mode,
            "mib": mib,
            "k": k,
            "pause_ms": round(max((r[2] for r in migration), default=0)),
            "noise_before_ms": round(max((r[2] for r in before), default=0)),
            "times_s": rel,
            "rc": {k2: v for k2, v in times.items() if isinstance(v, int)},
            "iters_per_100ms": {
                "before": med([r[1] for r in before]),
                "during_fault_in": med(during),
                "during_windows": len(during),
                "after": med(after),
            },
            "checksum_ok": (out / "sum0").read_text() == (out / "sum").read_text(),
        }
    )
)
