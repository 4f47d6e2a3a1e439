#!/usr/bin/env python3
"""Plots running perplexity against tokens (the paper's Figure 3 style) and
writes the results table, from the CSVs and raw.txt of run_experiment.sh."""
import csv
import math
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
def load(name):
    path = os.path.join(out, name + ".csv")
    if not os.path.exists(path):
        return [], []
    xs, ys = [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            xs.append(int(row["tokens"]))
            ys.append(float(row["ppl"]))
    return xs, ys


# Top: running perplexity, as in the paper's Figure 3. Bottom: each policy's
# running log-perplexity minus StreamingLLM's (4+252), since at this model's
# scale the curves lie on top of each other.
fig, (ax, diff) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
base_x, base_y = load("sink_4+252")
base = dict(zip(base_x, base_y))
for i, (name, label) in enumerate(series):
    xs, ys = load(name)
    if not xs:
        continue
    color = f"C{i}"
    ax.plot(xs, ys, label=label, linewidth=1.2, color=color)
    pairs = [(x, math.log(y) - math.log(base[x])) for x, y in zip(xs, ys) if x in base]
    if pairs and name != "sink_4+252":
        diff.plot([p[0] for p in pairs], [p[1] for p in pairs], label=label, linewidth=1.0, color=color)
ax.set_xscale("log")
ax.set_ylabel("running perplexity")
ax.set_title("stories260K on TinyStories, cache 256")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
diff.axhline(0.0, color="black", linewidth=0.6)
diff.set_xlabel("input length (tokens)")
diff.set_ylabel("log ppl - log ppl(4+252)")
diff.legend(fontsize=8)
diff.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "ppl.png"), dpi=120)

# Table: each run's command, final line, and the speed ratios.
blocks = re.split(r"^\$ ", raw, flags=re.M)[1:]
rows = []
times = {}
for b in blocks:
    lines = [l for l in b.strip().splitlines() if not l.startswith("#")]
    name = re.search(r"--csv \S+/([^/ ]+)\.csv", lines[0]).group(1)
    printed = [l for l in lines[1:] if not l.startswith("(exit")]
    last = printed[-1] if printed else "(nothing)"
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
