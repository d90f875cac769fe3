"""``bench/results.md`` (the rows, the targets) and ``bench/results.json`` (every figure) from one run."""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

from .plan import Row, Target, scaling_sizes

MIB, GIB = 1 << 20, 1 << 30
PACKAGES = ("datajoint", "dj-staged", "zarr", "numpy", "fsspec", "s3fs", "moto", "gcsfs", "adlfs")
CHECKS = {  # metric: (target, measured, the figure; None: the S3 hook saw no call)
    "ratio": ("≤ {:.2f} × {}, paired", "{:.2f} ×", lambda e, o: paired(e["seconds_rounds"], o["seconds_rounds"])),
    "speedup": ("≥ {:g} × faster than {}", "{:.1f} ×", lambda e, o: o["seconds"] / e["seconds"]),
    "rss": ("peak RSS ≤ start + {:g} MiB", "+{:.0f} MiB", lambda e, o: e["peak_above_before_mib"]),
    "rss_per_row": ("RSS above start ≤ {:g} KiB per row", "{:.1f} KiB", lambda e, o: e["kib_per_row"]),
    "seconds": ("< {:g} s", "{:.2f} s", lambda e, o: e["seconds"]),
    "downloaded": ("promotion downloads {:g} bytes", "{:,} bytes", lambda e, o: e["downloaded_bytes"]),
    "listings": ("≤ {:g} S3 listings per prefix", "{}", lambda e, o: e["listings_per_prefix"]),
    "growth": ("time per GiB ≤ {:.2f} × {}'s or the bend of its baseline", "{:.2f} ×", lambda e, o: growth(e, o)),
    "throughput": ("throughput ≥ {:g} × {}'s", "{:.2f} ×", lambda e, o: growth(o, e)),
    "uploaded": ("uploads ≤ {:.0%} of the payload + one part", "{:.1%} + one part",  # beyond one part: a fraction
                 lambda e, o: e["uploaded_bytes"] and (e["uploaded_bytes"] - e["unit_bytes"]) / e["payload_bytes"]),
}  # fmt: skip
NOTES = {  # extra figure: how the notes column shows it
    "emulator_cpu_share": "emulator CPU {:.0%} of wall",
    "s3_calls": "{} S3 calls by DataJoint's s3fs client",
    "downloaded_bytes": "{:,} bytes downloaded",
    "uploaded_bytes": "{:,} bytes uploaded",
    "resumed_from": "resumed from byte {:,}",
    "list_calls": "{} ListObjectsV2 calls",
    "listings_per_prefix": "at most {} per prefix",
    "collectable": "{} collectable",
    "rows": "{:,} rows",
    "bend": "baseline's time per GiB {:.2f} × at the first size",
    "kib_per_row": "{:.1f} KiB RSS per row",
}


def growth(e: dict, first: dict) -> float:
    """``e``'s time per byte over ``first``'s, over its baseline's own (``bend``) when that grew more."""
    per_byte = e["seconds"] / e["payload_bytes"] / (first["seconds"] / first["payload_bytes"])
    return per_byte / max(1.0, e.get("bend") or 1)


def paired(ours: list[float], base: list[float]) -> float:
    """Median of the round-by-round ratios when both ran more than once, else best over best."""
    n = min(len(ours), len(base))
    return statistics.median(o / b for o, b in zip(ours[:n], base[:n], strict=True)) if n > 1 else min(ours) / min(base)


def check(t: Target, e: dict, ok: dict[str, dict], labels: dict[str, str]) -> dict | None:
    """Target ``t`` on the row ``e``; None when the row it compares with did not run."""
    if t.baseline is not None and t.baseline not in ok:
        return None
    target, shown, figure = CHECKS[t.metric]
    v = figure(e, ok.get(t.baseline or ""))
    better = {"speedup": operator.ge, "throughput": operator.ge, "seconds": operator.lt}
    good = v is not None and better.get(t.metric, operator.le)(v, t.limit)
    measured = "no S3 call seen" if v is None else shown.format(v)
    return {"target": target.format(t.limit, labels.get(t.baseline or "")), "measured": measured, "ok": good}


def derive(rows: list[Row], results: dict[str, dict]) -> list[dict]:
    """Each row's figures with its ratio (paired and best), its speed-up over DataJoint, its checks."""
    ok = {key: result for key, result in results.items() if "error" not in result}
    labels, derived = {row.key: row.label for row in rows}, []
    for row in (row for row in rows if row.key in results):
        e = {"key": row.key, "label": row.label, "group": row.group, **results[row.key]}
        if row.key in ok:
            e["mib_per_s"] = e["payload_bytes"] / MIB / e["seconds"]
            e["kib_per_row"] = e["peak_above_before_mib"] * 1024 / e["rows"] if "rows" in e else None
            if (base := ok.get(row.baseline or "")) is not None:
                e["ratio_paired"] = paired(e["seconds_rounds"], base["seconds_rounds"])
                e["ratio_best"], e["baseline"] = e["seconds"] / base["seconds"], labels[row.baseline]
            if row.datajoint in ok:
                e["speedup"] = ok[row.datajoint]["seconds"] / e["seconds"]
            first = ok.get(f"{(row.baseline or '').split('@')[0]}@{(scaling_sizes() or [0])[0]:g}")  # a scaling one's
            e["bend"] = growth(base, first) if base and first else None  # growth: how much the baseline bends
            e["checks"] = [c for t in row.targets if (c := check(t, e, ok, labels)) is not None]
        derived.append(e)
    return derived


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _row(e: dict) -> str:
    if "error" in e:
        return f"| {_cell(e['label'])} | failed: {_cell(e['error'].splitlines()[-1])} |" + " |" * 11
    ratio = _cell(f"{e['ratio_paired']:.2f} ({e['ratio_best']:.2f}) × {e['baseline']}") if "baseline" in e else ""
    speedup = f"{e['speedup']:.1f} ×" if "speedup" in e else ""
    notes = _cell("; ".join(shown.format(e[key]) for key, shown in NOTES.items() if e.get(key) is not None))
    return (
        f"| {_cell(e['label'])} | {e['payload_bytes'] / MIB:.4g} | {len(e['seconds_rounds'])} | {e['seconds']:.2f} "
        f"| {e['seconds_median']:.2f} | {e['cpu_seconds']:.2f} | {e['mib_per_s']:.0f} | {e['peak_mib']:.0f} "
        f"| {e['peak_above_before_mib']:.0f} | {ratio} | {speedup} | {'yes' if e['harness_fsync'] else ''} | {notes} |"
    )


def write(rows: list[Row], results: dict[str, dict], meta: dict, out: Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``out``, with what the run ran on; their paths."""
    cpu = [line.split(":", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    meta |= {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": (cpu or [platform.processor()])[0].strip()}
    meta |= {"cores": os.cpu_count(), "memory_gib": round(memory / GIB, 1)}
    meta["versions"] = {"Python": platform.python_version()} | {name: version(name) for name in PACKAGES}
    derived, versions = derive(rows, results), ", ".join(f"{name} {v}" for name, v in meta["versions"].items())
    capped = f", rounds capped at {meta['rounds_cap']}" if meta["rounds_cap"] else ""
    lines = [
        "# dj-staged benchmark results",
        "",
        f"`make bench`: {meta['payload_gib']:g} GiB payload, {meta['batch_rows']:,} small rows{capped}; {meta['date']},"
        f" {meta['seconds']:.0f} s, {meta['cpu']} ({meta['cores']} cores, {meta['memory_gib']} GiB); {versions}. How it"
        " is measured, and what the columns mean: README, *Performance*, and `bench/plan.py`.",
        "",
        "| row | MiB | rounds | wall s best | wall s median | CPU s | MiB/s | peak RSS MiB | above start MiB "
        "| ratio paired (best) | vs DataJoint | harness fsync | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for i, e in enumerate(derived):
        if i == 0 or e["group"] != derived[i - 1]["group"]:
            lines.append(f"| **{_cell(e['group'])}** |" + " |" * 12)
        lines.append(_row(e))
    lines += ["", "## Targets", "", "| row | target | measured | |", "|---|---|---|---|"]
    checks = [(e["label"], c["target"], c["measured"], c["ok"]) for e in derived for c in e.get("checks", [])]
    lines += [f"| {_cell(label)} | {_cell(t)} | {m} | {'✅' if good else '❌'} |" for label, t, m, good in checks]
    lines += ["", f"{sum(c[3] for c in checks)} of {len(checks)} targets hold.", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": derived}, indent=2) + "\n")
    return out / "results.md", out / "results.json"
