#!/usr/bin/env python3
"""Per-turn table of the seed demo (bench/seed_demo/run.sh): one row per user
turn of each experiment, from sinkserve-chat's --stats lines, and a summary
with the server's RSS early and late.

  summarize.py OUT_DIR EXPERIMENT...
"""
import re
import sys

out, experiments = sys.argv[1], sys.argv[2:]
line_re = re.compile(r"\[turn (\d+): (\w+), prompt (\d+), generated (\d+), session (\d+), cache (\d+), evicted (\d+), "
                     r"ttft ([\d.]+) ms, ([\d.]+) tok/s(?:, error: (.*))?\]")


def rss_series(exp):
    samples = []
    for line in open(f"{out}/{exp}.rss"):
        parts = line.split()
        if len(parts) == 2:
            samples.append(int(parts[1]))
    return samples


print("# The seed's streaming demo on stories260K\n")
print("Produced by `bash bench/seed_demo/run.sh`; raw files beside this one (EXP.log is the streamed text, "
      "EXP.stats the per-turn usage lines, EXP.rss the server's RSS every 0.2 s, run.txt the commands).\n")
summary = []
tables = []
for exp in experiments:
    turns = []
    for line in open(f"{out}/{exp}.stats"):
        m = line_re.search(line)
        if m:
            turns.append(m.groups())
    rss = rss_series(exp)
    done = [t for t in turns if t[1] != "FINISH_REASON_ERROR"]
    errors = [t for t in turns if t[1] == "FINISH_REASON_ERROR"]
    generated = sum(int(t[3]) for t in turns)
    # Memory after the first tenth of the samples (the session's cache made) against the peak at the end.
    early = max(rss[: max(1, len(rss) // 10)]) if rss else 0
    late = max(rss) if rss else 0
    stop = f"turn {errors[0][0]}: {errors[0][9]}" if errors else "none"
    summary.append(f"| {exp} | {len(done)} / 160 | {generated} | {turns[-1][4] if turns else 0} | "
                   f"{turns[-1][5] if turns else 0} | {turns[-1][6] if turns else 0} | {early} | {late} | {stop} |")
    rows = [f"\n## {exp}\n", "| turn | finish | prompt | generated | session | cache | evicted | ttft ms | tok/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in turns:
        rows.append(f"| {t[0]} | {t[1].replace('FINISH_REASON_', '').lower()} | {t[2]} | {t[3]} | {t[4]} | {t[5]} | "
                    f"{t[6]} | {t[7]} | {t[8]} |")
    tables.append("\n".join(rows))
print("| experiment | turns finished | tokens generated | session tokens | cache tokens | evicted | "
      "RSS KiB, first tenth | RSS KiB, peak | where it stopped |")
print("|---|---|---|---|---|---|---|---|---|")
print("\n".join(summary))
print("\n".join(tables))
