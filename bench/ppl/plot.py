#!/usr/bin/env python3
"""Plots running perplexity against tokens (the paper's Figure 3 style) and
writes the results table, from the CSVs and raw.txt of run_experiment.sh."""
import csv
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
raw = open(os.path.join(out, "raw.txt")).read()
series = [("window_0+256", "window (0+256)"), ("sink_1+255", "sink_window (1+255)"),
          ("sink_2+254", "sink_window (2+254)"), ("sink_4+252", "StreamingLLM (4+252)"),
          ("dense", "dense"), ("recompute_256", "recompute (256)")]
fig, ax = plt.subplots(figsize=(9, 5))
for name, label in series:
    path = os.path.join(out, name + ".csv")
    if not os.path.exists(path):
        continue
    xs, ys = [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            xs.append(int(row["tokens"]))
            ys.append(float(row["ppl"]))
    if xs:
        ax.plot(xs, ys, label=label, linewidth=1.2)
ax.set_xscale("log")
ax.set_xlabel("input length (tokens)")
ax.set_ylabel("running perplexity")
ax.set_title("stories260K on TinyStories, cache 256")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "ppl.png"), dpi=120)

# Table: each run's command, final line, and the speed ratios.
blocks = re.split(r"^\$ ", raw, flags=re.M)[1:]
rows = []
times = {}
for b in blocks:
    lines = b.strip().splitlines()
    name = re.search(r"--csv \S+/([^/ ]+)\.csv", lines[0]).group(1)
    last = lines[-1]
    m = re.search(r"ms_per_token=([0-9.]+)", b)
    if m:
        times[name] = float(m.group(1))
    rows.append((name, last))
with open(os.path.join(out, "table.md"), "w") as f:
    f.write("| run | result (last line printed) |\n|---|---|\n")
    for name, last in rows:
        f.write(f"| {name} | `{last}` |\n")
    f.write("\n| cache | sink_window ms/token | recompute ms/token | recompute / sink_window |\n|---|---|---|---|\n")
    for cache in (256, 512):
        s, r = times.get(f"speed_sink_{cache}"), times.get(f"speed_recompute_{cache}")
        if s and r:
            f.write(f"| {cache} | {s:.4f} | {r:.4f} | {r / s:.1f}x |\n")
print(open(os.path.join(out, "table.md")).read())
