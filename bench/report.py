"""``bench/results.md`` (tables and target checks) and ``bench/results.json`` (every figure) from one run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

from .plan import Row

MIB = 1 << 20
GIB = 1 << 30
RSS_LIMIT_MIB = 128
LINEAR_TOLERANCE = 0.25  # seconds per GiB within ±25 % of the smallest size's
FLAT_TOLERANCE_MIB = 32  # peak RSS above start varies by at most this much across sizes


def machine() -> dict:
    """What the run ran on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / (1 << 20), 1),
        "python": platform.python_version(),
        "datajoint": version("datajoint"),
        "dj_staged": version("dj-staged"),
        "zarr": version("zarr"),
        "numpy": version("numpy"),
        "fsspec": version("fsspec"),
    }


def _by_label(rows: list[Row], results: dict[str, dict]) -> dict[str, dict]:
    return {row.label: results[row.key] for row in rows if row.key in results and "error" not in results[row.key]}


def derive(rows: list[Row], results: dict[str, dict]) -> list[dict]:
    """Each row's figures with its ratio to its baseline, its speed-up over DataJoint, and its target checks."""
    labels = _by_label(rows, results)
    derived = []
    for row in rows:
        result = results.get(row.key)
        if result is None:
            continue
        entry = {"key": row.key, "label": row.label, "group": row.group, **result}
        if "error" not in result:
            entry["mib_per_s"] = result["written_bytes"] / MIB / result["seconds"]
            base = labels.get(row.baseline) if row.baseline else None
            if base is not None:
                entry["baseline"] = row.baseline
                entry["ratio"] = result["seconds"] / base["seconds"]
                entry["ratio_median"] = result["seconds_median"] / base["seconds_median"]
                paired = _paired(result["seconds_rounds"], base["seconds_rounds"])
                if paired is not None:
                    entry["ratio_paired"] = paired
            dj_row = labels.get(row.datajoint) if row.datajoint else None
            if dj_row is not None:
                entry["datajoint"] = row.datajoint
                entry["speedup"] = dj_row["seconds"] / result["seconds"]
            entry["checks"] = _checks(row, entry)
        derived.append(entry)
    return derived


def _paired(ours: list[float], baseline: list[float]) -> float | None:
    """Median over rounds of the round-by-round ratio, when both rows ran more than once."""
    n = min(len(ours), len(baseline))
    return statistics.median(ours[i] / baseline[i] for i in range(n)) if n > 1 else None


def _checks(row: Row, entry: dict) -> list[dict]:
    checks = []
    if row.rss_target:
        above = entry["peak_above_before_mib"]
        checks.append(_check(f"peak RSS ≤ start + {RSS_LIMIT_MIB} MiB", f"+{above:.0f} MiB", above <= RSS_LIMIT_MIB))
    if row.max_ratio is not None and "ratio" in entry:
        ratio = entry.get("ratio_paired", entry["ratio"])
        ok = ratio <= row.max_ratio
        checks.append(_check(f"≤ {row.max_ratio:.2f} × {row.baseline}", f"{ratio:.2f} ×", ok))
    if row.min_speedup is not None and "speedup" in entry:
        ok = entry["speedup"] >= row.min_speedup
        checks.append(_check(f"≥ {row.min_speedup:g} × faster than DataJoint", f"{entry['speedup']:.1f} ×", ok))
    return checks


def _check(target: str, measured: str, ok: bool) -> dict:
    return {"target": target, "measured": measured, "ok": ok}


def scaling(derived: list[dict]) -> list[dict]:
    """Per codec of the scaling rows: linear time and flat memory across sizes."""
    series: dict[str, list[dict]] = {}
    for entry in derived:
        if entry["group"] == "scaling" and "error" not in entry:
            series.setdefault(entry["key"].split("@")[0], []).append(entry)
    verdicts = []
    for name, entries in series.items():
        entries.sort(key=lambda e: e["payload_bytes"])
        per_gib = [e["seconds"] / (e["written_bytes"] / GIB) for e in entries]
        above = [e["peak_above_before_mib"] for e in entries]
        linear = all(abs(p / per_gib[0] - 1) <= LINEAR_TOLERANCE for p in per_gib)
        flat = max(above) - min(above) <= FLAT_TOLERANCE_MIB and max(above) <= RSS_LIMIT_MIB
        verdicts.append(
            {
                "series": name,
                "gib": [round(e["written_bytes"] / GIB, 2) for e in entries],
                "seconds_per_gib": [round(p, 2) for p in per_gib],
                "peak_above_before_mib": [round(a, 1) for a in above],
                "linear": linear,
                "flat": flat,
            }
        )
    return verdicts


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def markdown(derived: list[dict], verdicts: list[dict], meta: dict) -> str:
    """The report: how it was measured, the table, the targets."""
    lines = [
        "# dj-staged benchmark results",
        "",
        f"Reproduce: `make bench` (payload `DJ_STAGED_BENCH_GIB={meta['payload_gib']:g}` GiB; "
        "see `bench/run.py` for the other settings). "
        f"Run {meta['date']} in {meta['total_seconds']:.0f} s on {meta['cpu']}, {meta['cores']} cores, "
        f"{meta['memory_gib']} GiB RAM; Python {meta['python']}, DataJoint {meta['datajoint']}, "
        f"dj-staged {meta['dj_staged']}, zarr {meta['zarr']}, numpy {meta['numpy']}.",
        "",
        "How: one embedded PostgreSQL for the run; a local `file` store and the baselines' files in one temporary "
        "folder on the same disk. Every row runs in its own fresh process (forked from a server that has only "
        "imported the modules), once per round "
        f"({meta['rounds']} rounds, more where noise would otherwise decide a ratio: the *rounds* column; each "
        "round runs the rows compared with one baseline as a block, together with that baseline, the first round "
        "in table order, later ones shuffled within each block). DataJoint's `insert1` rows run once, so their "
        "*vs DataJoint* figures come from one run of theirs; each size of the scaling series runs twice and "
        "keeps the faster, so that one stall does not bend the line. "
        "Byte rows write the same bytes in the same 4 MiB chunks (incompressible float64 values); Zarr "
        "rows write the same 2 MiB uint16 chunks, one per frame (`bench/zarr_memory.py`'s writer).",
        "",
        "- **fsync**: every row ends with an fsync of every file and directory it wrote, inside the timed region. "
        "The baselines fsync as the issue asks; DataJoint and dj-staged do not fsync themselves, so the harness "
        "does it for them and every row pays for durability the same way.",
        "- **Page cache**: this machine is a VM that returns memory idle for a few seconds to its host; the next "
        "write into it costs about 3 s per GiB in page faults, whichever row happens to do it. Before its clock "
        "starts, each row writes and deletes (unsynced, so nothing reaches the disk) a file of its payload's size. "
        "That removes the steady cost but not all of it: a GiB written to fresh page cache still stalls now and "
        "then for 1 to 2 s of system time (a plain Python loop writing 1 GiB and fsyncing it, run 12 times back to "
        "back, measured 0.23 to 2.3 s for the write and a steady 0.28 to 0.37 s for the fsync).",
        "- `insert1` rows get their value (array, file) prepared before the clock starts.",
        "- **wall s**: the row's work plus the fsync; *best* of the rounds (other developers' jobs share the 2 "
        "cores, and noise only adds time) and *median*. **CPU s**: user + system time of the row's process in "
        "its best round. **Peak RSS**: the OS's (`ru_maxrss` of the row's process, and RSS sampled every 5 ms by "
        "`dj_staged.measure`), largest over the rounds; *above start* is the peak minus the RSS just before the "
        "timed block. **Ratio**: wall / the baseline's wall in this run; *paired* is the median over rounds of "
        "the ratio within each round (a row and its baseline run in the same block of a round, minutes apart at "
        "most, so slow drifts in the machine's load cancel), and the targets are checked on it; *best* is best wall "
        "/ best wall. **vs DataJoint**: "
        "DataJoint's best wall for the same content / ours. **load**: mean 1-minute load average when the row "
        "started.",
        "- **Noise**: a staged row that does the same work as its baseline (`<hash@>` and write + MD5: one MD5 and "
        "one write of the same bytes) is expected at a ratio of 1.00, and single rounds of such pairs differ by "
        "up to 30 % either way on these 2 shared cores; read ratios below 1 as *equal*. The stalls above weigh "
        "most on the rows compared with the plain write, which take well under a second (one stall on either "
        "side of a pair moves its ratio by 0.5 or more), so those rows, the hash-addressed rows and the Zarr rows "
        "run more rounds: the median pair is a clean one unless stalls hit most rounds. With the disk and its "
        "stalls out of the way (`.venv/bin/python -m bench.overhead`: the same rows in turn in one process on "
        "`/dev/shm`, no fsync), a staged insert costs a few milliseconds more than its baseline: about 15 ms at "
        "256 MiB, under 10 ms at 1 GiB, a ratio of 1.00 to 1.01 at 1 GiB.",
        "",
        "| row | GiB | rounds | wall s best | wall s median | CPU s | MiB/s | peak RSS MiB | above start MiB "
        "| ratio to baseline: paired (best) | vs DataJoint | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    group_names = {"baseline": "baselines", "datajoint": "DataJoint 2.3.5", "ours": "dj-staged", "scaling": "scaling"}
    group = None
    for e in derived:
        if e["group"] != group:
            group = e["group"]
            lines.append(f"| **{group_names[group]}** |" + " |" * 11)
        if "error" in e:
            lines.append(f"| {_cell(e['label'])} | | | failed: {_cell(e['error'].splitlines()[-1])} |" + " |" * 8)
            continue
        ratio = f"{e.get('ratio_paired', e['ratio']):.2f} ({e['ratio']:.2f}) × {e['baseline']}" if "ratio" in e else ""
        speedup = f"{e['speedup']:.1f} ×" if "speedup" in e else ""
        peak = max(e["ru_maxrss_mib"], e["rss_peak_sampled_mib"])
        lines.append(
            f"| {_cell(e['label'])} | {e['written_bytes'] / GIB:.2f} | {len(e['seconds_rounds'])} | "
            f"{e['seconds']:.2f} | {e['seconds_median']:.2f} | {e['cpu_seconds']:.2f} | {e['mib_per_s']:.0f} | "
            f"{peak:.0f} | {e['peak_above_before_mib']:.0f} | {ratio} | {speedup} | {e.get('load_before', 0):.2f} |"
        )
    lines += ["", "## Targets", "", "| row | target | measured | |", "|---|---|---|---|"]
    for e in derived:
        for c in e.get("checks", []):
            lines.append(f"| {_cell(e['label'])} | {c['target']} | {c['measured']} | {_mark(c['ok'])} |")
    for v in verdicts:
        lines.append(
            f"| scaling {v['series']} | time linear (s/GiB within ±{LINEAR_TOLERANCE:.0%}) | "
            f"{' / '.join(f'{s:.2f}' for s in v['seconds_per_gib'])} s/GiB at "
            f"{' / '.join(f'{g:g}' for g in v['gib'])} GiB | {_mark(v['linear'])} |"
        )
        lines.append(
            f"| scaling {v['series']} | peak RSS flat (spread ≤ {FLAT_TOLERANCE_MIB} MiB, ≤ {RSS_LIMIT_MIB} MiB) | "
            f"+{' / +'.join(f'{a:.0f}' for a in v['peak_above_before_mib'])} MiB | {_mark(v['flat'])} |"
        )
    failed = [e["label"] for e in derived if "error" in e]
    if failed:
        lines += ["", f"Rows that failed: {', '.join(failed)}."]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def batch_section(batch: dict | None) -> str:
    """The multi-row section: one ``staged_insert`` batch against as many ``staged_insert1`` blocks."""
    if batch is None:
        return ""
    if "error" in batch:
        return f"\n## Many rows in one block\n\nThe batch benchmark failed: `{batch['error']}`\n"
    verdict = "✅" if batch["speedup"] > 1 else "❌"
    return "\n".join(
        [
            "",
            "## Many rows in one block",
            "",
            f"{batch['rows']:,} rows of a 1 KiB `<npy@>` each, in one process (`bench/multirow.py`): one "
            "`staged_insert` batch (one transaction) against as many `staged_insert1` blocks.",
            "",
            "| row | rows | wall s | peak RSS above start MiB |",
            "|---|---:|---:|---:|",
            f"| staged_insert batch | {batch['rows']} | {batch['batch_seconds']:.2f} | {batch['batch_peak_mib']:.1f} |",
            f"| staged_insert1 blocks | {batch['rows']} | {batch['single_seconds']:.2f} | "
            f"{batch['single_peak_mib']:.1f} |",
            "",
            f"Target: the batch commits faster than the single blocks: {batch['speedup']:.2f} × faster {verdict}",
            "",
        ]
    )


def write(
    rows: list[Row], results: dict[str, dict], meta: dict, out: Path, batch: dict | None = None
) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``out``; return their paths."""
    derived = derive(rows, results)
    verdicts = scaling(derived)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "results.md", out / "results.json"
    md.write_text(markdown(derived, verdicts, meta) + batch_section(batch))
    record = {"meta": meta, "rows": derived, "scaling": verdicts, "batch": batch}
    js.write_text(json.dumps(record, indent=2) + "\n")
    return md, js
