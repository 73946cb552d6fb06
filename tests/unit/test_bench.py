"""The performance report's arithmetic: medians, ratios, targets and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_cluster import bench


def _sample(seen: float, *, overhead: float | None = None, moved: int = 2**30) -> bench.Sample:
    return bench.Sample(
        freeze_to_running=seen + 0.1,
        workload_downtime=seen,
        total=seen + 1,
        bytes_moved=moved,
        overhead=overhead,
    )


def _results() -> dict[str, object]:
    sizes: dict[str, object] = {}
    for label, manual_seen, ferry_seen in (("tiny", 0.6, 0.42), ("1GiB", 10.0, 6.0)):
        manual = [_sample(manual_seen), _sample(manual_seen + 2)]
        ferry = [_sample(ferry_seen, overhead=0.2), _sample(ferry_seen + 1, overhead=0.4)]
        entry = {
            "manual": bench.medians(manual),
            "ferry": bench.medians(ferry),
            "samples": {"manual": [vars(s) for s in manual], "ferry": [vars(s) for s in ferry]},
        }
        entry["downtimeRatio"] = bench.ratio(
            entry["ferry"]["workloadDowntimeSeconds"], entry["manual"]["workloadDowntimeSeconds"]
        )
        sizes[label] = entry
    return {"sizes": sizes}


def test_medians_carry_throughput_and_overhead_only_where_measured() -> None:
    row = bench.medians([_sample(1.0, overhead=0.2), _sample(3.0, overhead=0.4)])
    assert row["workloadDowntimeSeconds"] == 2.0
    assert row["overheadSeconds"] == pytest.approx(0.3)
    assert row["throughputBytesPerSecond"] == pytest.approx(
        (2**30 / 1.1 + 2**30 / 3.1) / 2, rel=1e-3
    )
    assert "overheadSeconds" not in bench.medians([_sample(1.0)])


def test_targets_say_met_or_missed_from_the_same_run() -> None:
    found = {t["target"]: t for t in bench.targets(_results())}
    tiny = found["tiny: downtime Archive / manual"]
    assert (tiny["value"], tiny["met"]) == (0.575, True)  # medians 0.92 / 1.6
    big = found["1GiB: downtime Archive / manual"]
    assert (big["value"], big["met"]) == (0.591, False)  # medians 6.5 / 11.0
    assert found["Archive overhead, median seconds"]["value"] == pytest.approx(0.3)
    assert "1GiB: Archive throughput, bytes/s" in found
    assert not any("PageServer" in name for name in found), "only the methods that ran"


def test_the_plot_is_drawn_when_matplotlib_is_there(tmp_path: Path) -> None:
    results = _results()
    for entry, mib in zip(results["sizes"].values(), (0, 1024), strict=True):  # type: ignore[union-attr]
        entry["memoryMiB"] = mib
    out = tmp_path / "downtime.png"
    assert bench.plot(results, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
