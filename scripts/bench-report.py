#!/usr/bin/python3
"""Turns Google Benchmark JSON from ptk's benchmark programs into a report.

    scripts/bench-report.py REPORT_DIR [--expect FILE] [--title TEXT]

Reads REPORT_DIR/raw/*.json (one file per program, each run with repetitions) and
writes REPORT_DIR/report.md (one table per module: scenario, ptk, each peer, the
ratio ptk/peer from the same run, better or worse; medians with min-max) and
REPORT_DIR/charts/<module>.svg (gnuplot: each implementation's time relative to
ptk, log scale where the spread needs it). With --expect, fails (exit 1) when a
peer row that the build expects (its package is installed) is missing.

Benchmarks are named "<scenario>/<implementation>[/args]"; implementations whose
name starts with "ptk" are ptk's. A benchmark whose "metric" counter is set is
compared on that value instead of time (lower is better).
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone

MODULES = {
    "bench_thread_pool": "Threads: thread_pool and parallel loops",
    "bench_futex": "Waiting: futex round trips",
    "bench_coro": "Coroutines: task, when_all, timers",
    "bench_process": "Processes: spawn, wait, capture",
    "bench_ipc": "IPC: pipe, shm_ring, queue",
    "bench_process_pool": "Process pool",
}
IGNORED_PARTS = re.compile(r"^(real_time|process_time|manual_time|repeats:\d+|min_time:.*|iterations:\d+|threads:\d+)$")


def parse_name(run_name):
    parts = run_name.split("/")
    if len(parts) < 2:
        return None
    args = [p for p in parts[2:] if not IGNORED_PARTS.match(p)]
    scenario = parts[0] + ("/" + "/".join(args) if args else "")
    return scenario, parts[1]


def to_ns(value, unit):
    return value * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]


def load(path):
    """-> {scenario: {impl: {"values": [...], "metric": bool}}} from one JSON file."""
    with open(path) as f:
        text = f.read()
    # A program whose filter matched nothing leaves an empty file: no rows.
    data = json.loads(text) if text.strip() else {}
    rows = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        parsed = parse_name(b.get("run_name", b["name"]))
        if not parsed:
            continue
        scenario, impl = parsed
        metric = "metric" in b
        value = b["metric"] if metric else to_ns(b["real_time"], b.get("time_unit", "ns"))
        slot = rows.setdefault(scenario, {}).setdefault(impl, {"values": [], "metric": metric})
        slot["values"].append(value)
        # Peers measured in the same loop as ptk (interleaved) come as "peer:<impl>"
        # counters in the metric's unit (see benchmarks/support/compare.hpp).
        for key, peer_value in b.items():
            if key.startswith("peer:") and metric:
                peer = rows[scenario].setdefault(key[5:], {"values": [], "metric": True})
                peer["values"].append(peer_value)
    return data.get("context", {}), rows


def fmt(v, metric):
    if metric:
        return f"{v:.4g}"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


def describe(slot):
    vals = slot["values"]
    med = statistics.median(vals)
    text = fmt(med, slot["metric"])
    if len(vals) > 1:
        text += f" ({fmt(min(vals), slot['metric'])}–{fmt(max(vals), slot['metric'])})"
    return med, text


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}"


def chart(module, pairs_by_scenario, out_svg):
    """One bar per implementation per scenario, time relative to ptk (= 1)."""
    lines = []
    ratios = []
    for scenario, impls in pairs_by_scenario:
        ptk_values = [m for i, m in impls if i.startswith("ptk")]
        if not ptk_values:
            continue
        base = min(ptk_values)
        for impl, med in impls:
            r = med / base if base > 0 else 0
            ratios.append(r)
            label = f"{scenario.replace('BM_', '')}\\n{impl}"
            lines.append(f'"{label}" {r:.6g} {1 if impl.startswith("ptk") else 2}')
    if not lines:
        return False
    data_path = out_svg + ".dat"
    with open(data_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    positive = [r for r in ratios if r > 0]
    log = positive and max(positive) / min(positive) > 20
    width = max(640, 70 * len(lines))
    script = f"""
set terminal svg size {width},480 dynamic enhanced font 'sans,10' background rgb 'white'
set output '{out_svg}'
set title "{module}: time relative to ptk (ptk = 1, lower is faster){'; log scale' if log else ''}" noenhanced
set style fill solid 0.8 border -1
set boxwidth 0.7
set xtics rotate by -40 left noenhanced
set ylabel 'relative time'
set grid ytics
set key off
set yrange [{'0.01' if log else '0'}:*]
{'set logscale y' if log else ''}
set linetype 1 lc rgb '#2e7d32'
set linetype 2 lc rgb '#9e9e9e'
set bmargin 10
plot '{data_path}' using 0:2:3:xticlabels(1) with boxes lc variable
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench-report: no chart for {module}: {e}", file=sys.stderr)
        return False
    finally:
        os.remove(data_path)
    return True


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    report_dir = args[0]
    expect = None
    if "--expect" in args:
        expect = args[args.index("--expect") + 1]
    raw = os.path.join(report_dir, "raw")
    charts = os.path.join(report_dir, "charts")
    os.makedirs(charts, exist_ok=True)

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark report {#benchmark_report}",
        "",
        f"Measured {date} on {machine()}.",
        "",
        "Each value is the median of the repetitions with the min–max range in",
        "parentheses; every ratio compares rows measured in the same run of the same",
        "program. ptk/peer below 1 means ptk is faster. Shared VMs are noisy: read",
        "ratios, not absolute times.",
        "",
    ]
    summary = []
    present = {}
    files = sorted(f for f in os.listdir(raw) if f.endswith(".json")) if os.path.isdir(raw) else []
    for name in files:
        program = name[: -len(".json")]
        _, rows = load(os.path.join(raw, name))
        present[program] = {impl for impls in rows.values() for impl in impls}
        if not rows:
            continue
        module = MODULES.get(program, program)
        out += [f"## {module}", "", f"Program `{program}`.", ""]
        table = ["| scenario | ptk | peer | ptk/peer | |", "|---|---|---|---|---|"]
        chart_rows = []
        for scenario in sorted(rows):
            impls = rows[scenario]
            meds = {impl: describe(slot) for impl, slot in impls.items()}
            chart_rows.append((scenario, sorted(((i, m[0]) for i, m in meds.items()),
                                                key=lambda x: (not x[0].startswith("ptk"), x[0]))))
            ptks = sorted(i for i in impls if i.startswith("ptk"))
            peers = sorted(i for i in impls if not i.startswith("ptk"))
            for p in ptks:
                for q in peers:
                    r = meds[p][0] / meds[q][0] if meds[q][0] > 0 else float("inf")
                    verdict = "better" if r < 1 else ("worse" if r > 1 else "equal")
                    table.append(f"| {scenario} | {p}: {meds[p][1]} | {q}: {meds[q][1]} | {r:.2f}x | {verdict} |")
                    summary.append((module, scenario, p, q, r))
        out += table + [""]
        if chart(module, chart_rows, os.path.join(charts, program + ".svg")):
            out += [f"![{module}](charts/{program}.svg)", ""]
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write("\n".join(out))
    with open(os.path.join(report_dir, "summary.md"), "w") as f:
        f.write(f"Measured {date} on {machine()} (ptk/peer below 1: ptk faster).\n\n")
        f.write("| module | scenario | ptk | peer | ptk/peer |\n|---|---|---|---|---|\n")
        for module, scenario, p, q, r in summary:
            f.write(f"| {module.split(':')[0]} | {scenario} | {p} | {q} | {r:.2f}x |\n")
    print(f"bench-report: {report_dir}/report.md, {len(summary)} comparisons, charts in {charts}")

    if expect:
        missing = []
        with open(expect) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 2:
                    continue
                program, impl = parts
                if impl not in present.get(program, set()):
                    missing.append(f"{program}: {impl}")
        if missing:
            print("bench-report: peer rows missing although their package is installed: " + ", ".join(missing),
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
