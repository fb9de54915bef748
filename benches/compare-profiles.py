#!/usr/bin/env python3
"""Leaf-symbol and inclusive-frame differences between two profiles, in µs per request.

Usage: benches/compare-profiles.py A.script US_A B.script US_B [N]
(A/B: `perf script -F tid,ip,sym --no-inline` output; US_*: that process's CPU µs per request.)
Prints the N largest differences (A − B) of leaf symbols (self time) and of inclusive frames.
"""
import collections, re, sys
def load(p):
    samples, frames = [], []
    for line in open(p):
        if not line.strip():
            if frames: samples.append(frames)
            frames = []; continue
        if line.startswith("\t"):
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else "?")
    if frames: samples.append(frames)
    return samples
def norm(s):
    s = re.sub(r"\+0x[0-9a-f]+$", "", s)
    return s[:110]
a, ua, b, ub = load(sys.argv[1]), float(sys.argv[2]), load(sys.argv[3]), float(sys.argv[4])
n = int(sys.argv[5]) if len(sys.argv) > 5 else 30
def tab(samples, us, inclusive):
    c = collections.Counter()
    for f in samples:
        if inclusive:
            for s in set(norm(x) for x in f): c[s] += 1
        else:
            c[norm(f[0])] += 1
    return {k: us * v / len(samples) for k, v in c.items()}
for inclusive in (False, True):
    ta, tb = tab(a, ua, inclusive), tab(b, ub, inclusive)
    keys = set(ta) | set(tb)
    d = sorted(keys, key=lambda k: -(ta.get(k, 0) - tb.get(k, 0)))
    print(("inclusive" if inclusive else "self") + f" µs/req: A ({len(a)} samples) − B ({len(b)} samples)")
    for k in d[:n]:
        print(f"  {ta.get(k,0)-tb.get(k,0):+6.2f}  A {ta.get(k,0):6.2f}  B {tb.get(k,0):6.2f}  {k}")
