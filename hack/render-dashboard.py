#!/usr/bin/env python3
"""Draw Ferry's Grafana dashboard (charts/ferry/dashboards/ferry.json) to a PNG from scrapes
of a running operator's ``/metrics``, where neither Prometheus nor Grafana runs.

    hack/render-dashboard.py collect http://POD_IP:8080/metrics scrapes/ --every 5
    hack/render-dashboard.py render scrapes/ -o docs/dashboard.png

``collect`` saves one Prometheus text exposition per scrape, named by its Unix time.
``render`` reads the dashboard itself, panel by panel (type, grid position, unit,
queries, legends, colour overrides), and evaluates each query on those scrapes with the
small subset of PromQL the dashboard uses: ``sum [by (...)]``, ``increase``, ``rate``,
``histogram_quantile``, ``sort_desc``, ``/`` and label matchers. So a query the dashboard
gains outside that subset fails here, loudly, rather than being drawn from something else.

The time range is the span of the scrapes; a counter counts from 0 before the first one
(the operator's counters start at 0 with its process). Unlike Prometheus, ``increase``
does not extrapolate to the window's edges: it adds the deltas between scrapes (a
decrease is a counter reset). ``$__rate_interval`` is Grafana's: the larger of the step
plus one scrape interval and four scrape intervals. A dev tool: needs matplotlib
(``pip install matplotlib``, in the cluster package's dev dependencies).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "charts" / "ferry" / "dashboards" / "ferry.json"

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]

# --- scrapes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    time: float
    #: metric sample name -> labels -> value
    samples: dict[str, Vector]


def read_scrape(path: Path) -> Scrape:
    """One exposition; its time is its file name (``collect``'s) or else its mtime."""
    try:
        when = float(path.stem)
    except ValueError:
        when = path.stat().st_mtime
    samples: dict[str, Vector] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return Scrape(when, samples)


def read_scrapes(paths: list[Path]) -> list[Scrape]:
    files = [f for p in paths for f in (sorted(p.glob("*.prom")) if p.is_dir() else [p])]
    if not files:
        raise SystemExit("no scrapes given (files, or directories of *.prom)")
    return sorted((read_scrape(f) for f in files), key=lambda s: s.time)


def collect(url: str, into: Path, every: float, count: int) -> None:
    into.mkdir(parents=True, exist_ok=True)
    done = 0
    while count == 0 or done < count:
        if not url.startswith(("http://", "https://")):
            raise SystemExit(f"not an http(s) URL: {url}")
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - checked above
            text = answer.read().decode()
        (into / f"{time.time():.3f}.prom").write_text(text)
        done += 1
        time.sleep(every)


# --- the PromQL subset ---------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r'|(?P<string>"(?:[^"\\]|\\.)*")|(?P<range>\[[^\]]*\])|(?P<op>=~|!~|!=|[(){},=/]))'
)
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def tokens(expr: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(expr.rstrip()):
        match = TOKEN.match(expr, at)
        if not match or match.end() == at:
            raise ValueError(f"cannot read {expr[at:]!r} in {expr!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        at = match.end()
    return found


@dataclass(frozen=True)
class Window:
    """What ``$__range`` and ``$__rate_interval`` stand for."""

    range: float
    rate_interval: float

    def seconds(self, text: str) -> float:
        text = text.strip("[]")
        if text == "$__range":
            return self.range
        if text == "$__rate_interval":
            return self.rate_interval
        parts = DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"unknown range [{text}]")
        return sum(int(n) * SECONDS[u] for n, u in parts)


#: A parsed expression: given the scrapes, a time and a window, its instant vector.
Node = Callable[[list[Scrape], float, Window], Vector]


class Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = tokens(expr)
        self.at = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> str:
        kind, text = self.peek()
        if kind == "end" or (value is not None and text != value):
            raise ValueError(f"expected {value or 'more'} in {self.expr!r}, found {text!r}")
        self.at += 1
        return text

    def parse(self) -> Node:
        node = self.division()
        if self.peek()[0] != "end":
            raise ValueError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")
        return node

    def division(self) -> Node:
        node = self.term()
        while self.peek() == ("op", "/"):
            self.take("/")
            node = divide(node, self.term())
        return node

    def term(self) -> Node:
        kind, text = self.peek()
        if kind == "number":
            self.take()
            value = float(text)
            return lambda _s, _t, _w: {frozenset(): value}
        if kind == "op" and text == "(":
            self.take("(")
            node = self.division()
            self.take(")")
            return node
        if kind != "name":
            raise ValueError(f"unexpected {text!r} in {self.expr!r}")
        name = self.take()
        if name == "sum":
            return self.aggregation()
        if name in ("increase", "rate"):
            self.take("(")
            selector, window = self.selector(self.take(), ranged=True)
            self.take(")")
            return over_window(selector, window, per_second=name == "rate")
        if name == "histogram_quantile":
            self.take("(")
            quantile = float(self.take())
            self.take(",")
            inner = self.division()
            self.take(")")
            return lambda s, t, w: histogram_quantile(quantile, inner(s, t, w))
        if name == "sort_desc":
            self.take("(")
            inner = self.division()
            self.take(")")
            return lambda s, t, w: dict(sorted(inner(s, t, w).items(), key=lambda kv: -kv[1]))
        selector, _ = self.selector(name, ranged=False)
        return lambda s, t, _w: instant(s, t, selector)

    def aggregation(self) -> Node:
        by: tuple[str, ...] | None = None
        if self.peek() == ("name", "by"):
            by = self.labels()
        self.take("(")
        inner = self.division()
        self.take(")")
        if self.peek() == ("name", "by"):
            by = self.labels()
        return lambda s, t, w: summed(inner(s, t, w), by or ())

    def labels(self) -> tuple[str, ...]:
        self.take("by")
        self.take("(")
        names = [self.take()]
        while self.peek() == ("op", ","):
            self.take(",")
            names.append(self.take())
        self.take(")")
        return tuple(names)

    def selector(self, name: str, *, ranged: bool) -> tuple[Selector, str]:
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == ("op", "{"):
            self.take("{")
            while self.peek() != ("op", "}"):
                label, op, value = self.take(), self.take(), self.take()
                if op not in ("=", "!=", "=~", "!~") or not value.startswith('"'):
                    raise ValueError(f"bad matcher {label}{op}{value} in {self.expr!r}")
                matchers.append((label, op, json.loads(value)))
                if self.peek() == ("op", ","):
                    self.take(",")
            self.take("}")
        window = ""
        if ranged:
            kind, window = self.peek()
            if kind != "range":
                raise ValueError(f"{name} needs a [range] in {self.expr!r}")
            self.take()
        return Selector(name, tuple(matchers)), window


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def matches(self, labels: Labels) -> bool:
        have = dict(labels)
        for label, op, value in self.matchers:
            got = have.get(label, "")
            hit = re.fullmatch(value, got) is not None if "~" in op else got == value
            if hit == op.startswith("!"):
                return False
        return True

    def series(self, scrape: Scrape) -> Vector:
        return {k: v for k, v in scrape.samples.get(self.name, {}).items() if self.matches(k)}


def instant(scrapes: list[Scrape], at: float, selector: Selector) -> Vector:
    before = [s for s in scrapes if s.time <= at]
    return selector.series(before[-1]) if before else {}


def over_window(selector: Selector, window: str, *, per_second: bool) -> Node:
    def evaluate(scrapes: list[Scrape], at: float, w: Window) -> Vector:
        seconds = w.seconds(window)
        inside = [s for s in scrapes if at - seconds < s.time <= at]
        if not inside:
            return {}
        before = [s for s in scrapes if s.time <= at - seconds]
        previous = selector.series(before[-1]) if before else {}  # 0 before the first scrape
        names = {k for s in inside for k in selector.series(s)}
        result: Vector = {}
        for labels in names:
            last, grown = previous.get(labels, 0.0), 0.0
            for scrape in inside:
                value = selector.series(scrape).get(labels, 0.0)
                grown += value - last if value >= last else value  # a decrease is a reset
                last = value
            result[labels] = grown / seconds if per_second else grown
        return result

    return evaluate


def summed(vector: Vector, by: tuple[str, ...]) -> Vector:
    result: Vector = {}
    for labels, value in vector.items():
        key = frozenset((k, v) for k, v in labels if k in by)
        result[key] = result.get(key, 0.0) + value
    return result


def divide(left: Node, right: Node) -> Node:
    def evaluate(scrapes: list[Scrape], at: float, w: Window) -> Vector:
        numerator, denominator = left(scrapes, at, w), right(scrapes, at, w)
        if list(denominator) == [frozenset()]:
            return {
                k: v / denominator[frozenset()]
                for k, v in numerator.items()
                if denominator[frozenset()]
            }
        return {k: v / denominator[k] for k, v in numerator.items() if denominator.get(k)}

    return evaluate


def histogram_quantile(quantile: float, buckets: Vector) -> Vector:
    """Prometheus' linear interpolation inside the bucket the rank falls in."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, count in buckets.items():
        le = dict(labels)["le"]
        groups.setdefault(frozenset(kv for kv in labels if kv[0] != "le"), []).append(
            (float(le), count)
        )
    result: Vector = {}
    for labels, pairs in groups.items():
        pairs.sort()
        total = pairs[-1][1]
        if total <= 0:
            continue
        rank, lower, below = quantile * total, 0.0, 0.0
        for upper, count in pairs:
            if count >= rank:
                if math.isinf(upper):
                    result[labels] = lower
                else:
                    part = (rank - below) / (count - below) if count > below else 0.0
                    result[labels] = lower + (upper - lower) * part
                break
            lower, below = upper, count
    return result


# --- drawing -------------------------------------------------------------------------

BACKGROUND, PANEL, BORDER, TEXT, DIM = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e8e"
NAMED = {
    "green": "#73BF69",
    "red": "#F2495C",
    "orange": "#FF9830",
    "yellow": "#FADE2A",
    "blue": "#5794F2",
}
PALETTE = ("#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9")
#: Grafana's grid: 24 columns; one row unit is 30 px against a column's ~80 px.
COLUMN, ROW = 0.7, 0.28


def fmt(value: float, unit: str, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "No data"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        if value and abs(value) < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.{2 if decimals is None else decimals}f} s"
    if unit in ("bytes", "Bps"):
        scaled, prefix = value, ""
        for prefix in ("", "Ki", "Mi", "Gi", "Ti"):  # noqa: B007 - the last one is kept
            if abs(scaled) < 1024:
                break
            scaled /= 1024
        suffix = "B/s" if unit == "Bps" else "B"
        return f"{scaled:.{1 if decimals is None else decimals}f} {prefix}{suffix}"
    if decimals == 0 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2f}"


def legend(target: dict[str, Any], labels: Labels) -> str:
    form = target.get("legendFormat") or "__auto"
    have = dict(labels)
    if form == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(have.items())) or target["expr"]
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: have.get(m.group(1), ""), form)


def colour(panel: dict[str, Any], name: str, index: int) -> str:
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        hit = (matcher.get("id") == "byName" and matcher.get("options") == name) or (
            matcher.get("id") == "byRegexp" and re.search(matcher.get("options", ""), name)
        )
        for prop in override.get("properties", []) if hit else []:
            if prop.get("id") == "color":
                fixed = str(prop["value"].get("fixedColor", ""))
                return NAMED.get(fixed, fixed)
    scheme = panel.get("fieldConfig", {}).get("defaults", {}).get("color", {})
    if scheme.get("mode") == "fixed":
        fixed = str(scheme["fixedColor"])
        return NAMED.get(fixed, fixed)
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Frame:
    scrapes: list[Scrape]
    start: float
    end: float
    scrape_interval: float

    def steps(self) -> Iterator[float]:
        step = max((self.end - self.start) / 120, self.scrape_interval)
        at = self.start
        while at <= self.end + 1e-6:
            yield at
            at += step

    def window(self) -> Window:
        step = max((self.end - self.start) / 120, self.scrape_interval)
        rate = max(step + self.scrape_interval, 4 * self.scrape_interval)
        return Window(range=max(self.end - self.start, self.scrape_interval), rate_interval=rate)

    def instant(self, expr: str) -> Vector:
        return Parser(expr).parse()(self.scrapes, self.end, self.window())


def draw_stat(ax: Any, panel: dict[str, Any], frame: Frame) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    vector = frame.instant(panel["targets"][0]["expr"])
    value = next(iter(vector.values()), math.nan)
    shown = TEXT
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or (not math.isnan(value) and value >= step["value"]):
            shown = TEXT if step["color"] == "text" else NAMED.get(step["color"], step["color"])
    ax.text(
        0.5,
        0.42,
        fmt(value, defaults.get("unit", ""), defaults.get("decimals")),
        ha="center",
        va="center",
        fontsize=24,
        fontweight="bold",
        color=shown,
        transform=ax.transAxes,
    )
    ax.set_axis_off()


def draw_bargauge(ax: Any, panel: dict[str, Any], frame: Frame) -> None:
    names: list[str] = []
    values: list[float] = []
    for target in panel["targets"]:
        vector = frame.instant(target["expr"])
        if target.get("format") == "heatmap":  # cumulative buckets -> counts per bucket
            ordered = sorted(vector.items(), key=lambda kv: float(dict(kv[0])["le"]))
            below, bound = 0.0, "0"
            for labels, count in ordered:
                le = dict(labels)["le"]
                names.append(f"> {bound} s" if le == "+Inf" else f"≤ {float(le):g} s")
                values.append(count - below)
                below, bound = count, f"{float(le):g}"
        else:
            for labels, value in vector.items():
                names.append(legend(target, labels))
                values.append(value)
    if not names:
        ax.text(0.5, 0.5, "No data", ha="center", color=DIM, transform=ax.transAxes)
        ax.set_axis_off()
        return
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    rows = range(len(names))[::-1]
    colours = [colour(panel, n, i) for i, n in enumerate(names)]
    ax.barh(list(rows), [max(v, 0) for v in values], color=colours, height=0.7)
    ax.set_xlim(0, max(max(values) * 1.15, 1))
    for row, value in zip(rows, values, strict=True):
        ax.text(ax.get_xlim()[1], row, fmt(value, unit) + " ", ha="right", va="center", color=TEXT)
    ax.set_yticks(list(rows), names, fontsize=8, color=TEXT)
    ax.tick_params(axis="x", colors=DIM, labelsize=7)
    for side in ax.spines.values():
        side.set_visible(False)


def draw_timeseries(ax: Any, panel: dict[str, Any], frame: Frame) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    bars = defaults.get("custom", {}).get("drawStyle") == "bars"
    window = frame.window()
    steps = list(frame.steps())
    lines: dict[str, list[float]] = {}
    for target in panel["targets"]:
        node = Parser(target["expr"]).parse()
        for index, at in enumerate(steps):
            for labels, value in node(frame.scrapes, at, window).items():
                name = legend(target, labels)
                lines.setdefault(name, [math.nan] * len(steps))[index] = value
    minutes = [(at - frame.start) / 60 for at in steps]
    width = (minutes[1] - minutes[0]) * 0.8 if len(minutes) > 1 else 0.1
    bottom = [0.0] * len(steps)
    for index, (name, values) in enumerate(sorted(lines.items())):
        tint = colour(panel, name, index)
        if bars:
            heights = [0.0 if math.isnan(v) else v for v in values]
            ax.bar(minutes, heights, width=width, bottom=bottom, color=tint, label=name)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        else:
            ax.plot(minutes, values, color=tint, label=name, linewidth=1.6, marker=".", ms=3)
    unit = defaults.get("unit", "")
    ax.yaxis.set_major_formatter(lambda v, _pos: fmt(v, unit))
    ax.xaxis.set_major_formatter(
        lambda m, _pos: datetime.fromtimestamp(frame.start + m * 60, UTC).strftime("%H:%M")
    )
    ax.tick_params(colors=DIM, labelsize=7)
    ax.grid(color=BORDER, linewidth=0.6)
    ax.set_ylim(bottom=0)
    for side in ax.spines.values():
        side.set_color(BORDER)
    if lines:
        ax.legend(loc="upper left", fontsize=7, frameon=False, labelcolor=TEXT, ncol=4)
    else:
        ax.text(0.5, 0.5, "No data", ha="center", color=DIM, transform=ax.transAxes)


DRAW = {"stat": draw_stat, "bargauge": draw_bargauge, "timeseries": draw_timeseries}


def render(dashboard: dict[str, Any], scrapes: list[Scrape], out: Path, source: str) -> None:
    import matplotlib  # noqa: PLC0415 - a dev tool's optional dependency

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    gaps = [b.time - a.time for a, b in itertools.pairwise(scrapes)]
    interval = sorted(gaps)[len(gaps) // 2] if gaps else 15.0
    frame = Frame(scrapes, scrapes[0].time, scrapes[-1].time, interval)
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    header = 0.7
    width, height = 24 * COLUMN, rows * ROW + header
    figure = pyplot.figure(figsize=(width, height), facecolor=BACKGROUND)
    for panel in panels:
        if panel["type"] not in DRAW:
            raise SystemExit(f"panel {panel['title']!r}: no drawing for type {panel['type']}")
        grid = panel["gridPos"]
        pad = 0.06
        left = (grid["x"] * COLUMN + pad) / width
        top = (height - header - grid["y"] * ROW - pad) / height
        box = figure.add_axes(
            (
                left,
                top - (grid["h"] * ROW - 2 * pad) / height,
                (grid["w"] * COLUMN - 2 * pad) / width,
                (grid["h"] * ROW - 2 * pad) / height,
            )
        )
        box.set_facecolor(PANEL)
        box.set_xticks([])
        box.set_yticks([])
        for side in box.spines.values():
            side.set_color(BORDER)
        box.text(
            0.01,
            0.97,
            panel["title"],
            va="top",
            color=TEXT,
            fontsize=9,
            fontweight="bold",
            transform=box.transAxes,
        )
        inner = figure.add_axes(
            (
                left + 0.45 / width,
                top - (grid["h"] * ROW - 0.3) / height,
                (grid["w"] * COLUMN - 0.75) / width,
                (grid["h"] * ROW - 0.75) / height,
            )
            if panel["type"] != "bargauge"
            else (
                left + (grid["w"] * COLUMN * 0.3) / width,
                top - (grid["h"] * ROW - 0.25) / height,
                (grid["w"] * COLUMN * 0.66) / width,
                (grid["h"] * ROW - 0.65) / height,
            )
        )
        inner.set_facecolor(PANEL)
        DRAW[panel["type"]](inner, panel, frame)
    began = datetime.fromtimestamp(frame.start, UTC).strftime("%Y-%m-%d %H:%M")
    ended = datetime.fromtimestamp(frame.end, UTC).strftime("%H:%M UTC")
    figure.text(
        0.008,
        1 - 0.25 / height,
        dashboard["title"],
        color=TEXT,
        fontsize=14,
        fontweight="bold",
        va="top",
    )
    figure.text(
        0.008,
        1 - 0.52 / height,
        f"{len(scrapes)} scrapes of {source}, {began} to {ended} (the time range); "
        "drawn by hack/render-dashboard.py from the dashboard's own queries",
        color=DIM,
        fontsize=8,
        va="top",
    )
    figure.savefig(out, dpi=110, facecolor=BACKGROUND)


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    get = sub.add_parser("collect", help="scrape /metrics into a directory, one file a scrape")
    get.add_argument("url")
    get.add_argument("into", type=Path)
    get.add_argument("--every", type=float, default=5, help="seconds between scrapes")
    get.add_argument("--count", type=int, default=0, help="stop after so many (0: never)")
    draw = sub.add_parser("render", help="draw the dashboard from scrapes to a PNG")
    draw.add_argument("scrapes", type=Path, nargs="+", help="*.prom files or directories")
    draw.add_argument("-d", "--dashboard", type=Path, default=DASHBOARD)
    draw.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    draw.add_argument("--source", default="the operator's /metrics", help="said in the header")
    args = top.parse_args(argv)
    if args.command == "collect":
        collect(args.url, args.into, args.every, args.count)
        return 0
    dashboard = json.loads(args.dashboard.read_text())
    render(dashboard, read_scrapes(args.scrapes), args.out, args.source)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
