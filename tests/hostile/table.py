"""The hostile-input table: class, command, exit code, stderr lines, peak RSS, seconds."""
from __future__ import annotations


def format_table(rows: list[dict]) -> str:
    head = f"{'case':44s} {'class':12s} {'command':13s} {'exit':>4s} {'lines':>5s} " \
           f"{'RSS MiB':>8s} {'s':>6s}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['case'][:44]:44s} {r['cls']:12s} {r['command']:13s} {r['rc']:>4d} "
                   f"{r['lines']:>5d} {r['rss'] / 2**20:>8.0f} {r['seconds']:>6.1f}")
    n70 = sum(r["rc"] == 70 for r in rows)
    tb = sum(r["traceback"] for r in rows)
    hangs = sum(r["timed_out"] for r in rows)
    out.append(f"{len(rows)} inputs; exit 70: {n70}; tracebacks: {tb}; hangs: {hangs}; "
               f"max RSS {max(r['rss'] for r in rows) / 2**20:.0f} MiB; "
               f"max time {max(r['seconds'] for r in rows):.1f} s")
    return "\n".join(out)
