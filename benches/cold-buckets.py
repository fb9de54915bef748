#!/usr/bin/env python3
"""Disjoint buckets of the gateway's samples on the introspection-miss path (issue 14, item 4).

Usage: perf script -i gateway.data -F tid,ip,sym --no-inline | benches/cold-buckets.py US_PER_REQ
Each sample goes to the first bucket whose rule matches its stack (leaf first); "kernel" means
the leaf frame is in the kernel (syscalls, loopback TCP, softirq, scheduler).
"""
import collections, re, sys
us = float(sys.argv[1]) if len(sys.argv) > 1 else None
samples, frames = [], []
for line in sys.stdin:
    if not line.strip():
        if frames: samples.append(frames)
        frames = []; continue
    if line.startswith("\t"):
        parts = line.strip().split(" ", 1)
        frames.append((parts[0], parts[1] if len(parts) > 1 else ""))
if frames: samples.append(frames)
AS = re.compile(r"H2ClientFuture|h2::|reqwest::|hyper_util::client|HttpIntrospector|hyper::proto::h2|tokio_rustls::client")
MALLOC = re.compile(r"^(malloc|_int_malloc|_int_free|cfree|free|unlink_chunk|malloc_consolidate|realloc|_int_realloc|__libc_malloc|__libc_free)")
def cls(f):
    j = " | ".join(s for _, s in f)
    kernel = f[0][0].startswith("ffffffff")
    if re.search(r"introspection::claims", j): return "miss: claim interning/compaction (claims.rs)"
    if re.search(r"cache::index|ConsentIndex", j): return "miss: consent index"
    if re.search(r"IntrospectionCache::insert|moka::", j): return "miss: cache insert (other)"
    if AS.search(j):
        if kernel: return "AS call: kernel (syscalls, loopback TCP to the AS)"
        if re.search(r"serde_json", j): return "AS call: JSON parse of the response"
        if re.search(r"rustls::", j): return "AS call: rustls user space (records, AES-GCM)"
        if re.search(r"url::|idna::|form_urlencoded", j): return "AS call: URL parse / form body"
        if MALLOC.search(f[0][1]) or re.search(r"memmove|memcpy", f[0][1]): return "AS call: malloc/free/memmove"
        if re.search(r"h2::", j): return "AS call: h2 framing/streams"
        return "AS call: reqwest/hyper other"
    if re.search(r"IntrospectionCache::(fetch|lookup)|Guarded", j): return "miss: lookup/fetch task other"
    if kernel:
        if re.search(r"epoll_wait|futex|schedule", j) and not re.search(r"sendto|writev|recvfrom", j): return "kernel: scheduler/epoll/futex"
        return "kernel: downstream+bank sockets"
    if re.search(r"epoll_wait|park_internal|park_timeout", j): return "runtime: park/epoll (user)"
    if re.search(r"rustls::", j): return "downstream: rustls (client mTLS) user"
    if MALLOC.search(f[0][1]) or re.search(r"memmove|memcpy", f[0][1]): return "downstream: malloc/free/memmove"
    if re.search(r"proxy_to_upstream|proxy_1to1", j): return "downstream: proxy to bank, user"
    if re.search(r"request_filter", j): return "downstream: request_filter other (user)"
    if re.search(r"process_request|process_new_http", j): return "downstream: pingora other (user)"
    if re.search(r"tokio::", j): return "runtime: tokio other"
    return "other"
b = collections.Counter(cls(s) for s in samples)
n = len(samples)
print(f"samples {n}")
for k, v in sorted(b.items(), key=lambda x: -x[1]):
    print(f"{k:52s} {100*v/n:5.1f} %" + (f" {us*v/n:6.1f} µs/req" if us else ""))
for pre in ("AS call", "miss:", "downstream", "kernel", "runtime"):
    v = sum(c for k, c in b.items() if k.startswith(pre))
    print(f"  total {pre:12s} {100*v/n:5.1f} %" + (f" {us*v/n:6.1f} µs/req" if us else ""))
