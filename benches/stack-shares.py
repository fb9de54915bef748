#!/usr/bin/env python3
"""Inclusive shares of frame patterns in `perf script -F tid,ip,sym` output (issue 14).

Usage: perf script -i X.data -F tid,ip,sym --no-inline | benches/stack-shares.py PATTERN...
Each PATTERN is `label=regex`; a sample counts for a label when any of its frames matches.
With --exclusive each sample goes to the first matching label (the rest to "other").
Prints the share of all samples and, with --us N (CPU µs per request), µs per request.
"""
import re, sys
args = sys.argv[1:]
us = None
exclusive = False
while args and args[0].startswith("--"):
    if args[0] == "--us":
        us = float(args[1]); args = args[2:]
    elif args[0] == "--exclusive":  # each sample to the first label that matches, "other" else
        exclusive = True; args = args[1:]
pats = [(a.split("=", 1)[0], re.compile(a.split("=", 1)[1])) for a in args]
counts = {l: 0 for l, _ in pats}
total = 0
frames = []
def flush():
    global total
    if not frames: return
    total += 1
    hit = False
    for l, p in pats:
        if any(p.search(f) for f in frames):
            counts[l] += 1; hit = True
            if exclusive: break
    if exclusive and not hit:
        counts["other"] = counts.get("other", 0) + 1
for line in sys.stdin:
    if not line.strip():
        flush(); frames = []; continue
    if line.startswith("\t") or line.startswith("  ") and not line.strip().isdigit():
        parts = line.strip().split(" ", 1)
        frames.append(parts[1] if len(parts) > 1 else parts[0])
flush()
print(f"samples {total}")
for l in [l for l, _ in pats] + (["other"] if exclusive else []):
    s = counts.get(l, 0) / total if total else 0
    extra = f"  {s*us:6.1f} µs/req" if us else ""
    print(f"{l:40s} {100*s:6.2f} %{extra}")
