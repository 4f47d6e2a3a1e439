#!/usr/bin/env python3
"""sinkserve-perplexity against the independent numpy implementation
(bench/ppl/reference_ppl.py) on the same ids, for every cache policy, with
a small cache so the window wraps many times. Exit 77 = skipped."""
import os
import subprocess
import sys

build, source = sys.argv[1], sys.argv[2]
shared = os.environ.get("SINKSERVE_SHARED_DIR") or os.path.join(source, "..", "shared")
model = os.path.join(shared, "models/stories260K/stories260K.bin")
tok = os.path.join(shared, "models/stories260K/tok512.bin")
text = os.path.join(shared, "text/tinystories.txt")
for path in (model, tok, text):
    if not os.path.exists(path):
        print(f"SKIP: shared test data missing: {path}")
        sys.exit(77)
try:
    import numpy  # noqa: F401
except ImportError:
    print("SKIP: numpy missing (scripts/setup.sh installs python3-numpy)")
    sys.exit(77)

with open(text, "rb") as f:
    head = f.read(4000)
ids = subprocess.run([os.path.join(build, "sinkserve-tokenize"), "--tokenizer", tok], input=head,
                     capture_output=True, check=True).stdout.split()[:160]
ids_file = os.path.join(build, "ppl_crosscheck_ids.txt")
with open(ids_file, "wb") as f:
    f.write(b" ".join(ids))

cases = [["--policy", "window", "--window", "24"],
         ["--policy", "sink_window", "--sinks", "1", "--window", "23"],
         ["--policy", "sink_window", "--sinks", "4", "--window", "20"],
         ["--policy", "dense"],
         ["--policy", "recompute", "--window", "24"]]
failed = 0
for case in cases:
    ours = subprocess.run([os.path.join(build, "sinkserve-perplexity"), "--model", model, "--tokenizer", tok,
                           "--ids-file", ids_file, "--backend", "cpu", "--chunk", "5"] + case,
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    ref = subprocess.run([sys.executable, os.path.join(source, "bench/ppl/reference_ppl.py"), "--model", model,
                          "--ids-file", ids_file] + case, capture_output=True, text=True, check=True).stdout.strip()
    a, b = float(ours.split()[0][4:]), float(ref.split()[0][4:])
    ok = abs(a - b) <= 1e-4 * b and ours.split()[1] == ref.split()[1]
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {' '.join(case):45s} sinkserve {ours}   reference {ref}")
sys.exit(1 if failed else 0)
