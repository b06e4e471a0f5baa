#!/usr/bin/env python3
"""Splits paymentd's sampled time by part, from `perf script` output of a call-graph recording.

    perf script -i perf.data | bench/perf_parts.py

Each sample goes to one part: a sample in the kernel to the kernel (network or the rest); any
other to the first frame from the leaf up that names a part (the WAF, JSON, the database
client, TLS, HTTP, the runtime, one of paymentd's crates, ...), passing over frames that every
part calls (the allocator, memcpy and memcmp, core/alloc/std, future combinators, regex and
memchr searches), so an allocation, a copy or a search counts for the part that asked for it.
A future's poll holds what the compiler inlined into it, so "HTTP routing (axum, tower)" and
"route handlers" include some of the services' own code. Also prints how many samples' stacks reached the
runtime's worker loop: with a build without frame pointers and `--call-graph fp` that share
is low, and the split is of the few stacks that did unwind (see docs/performance.md).
"""

import collections
import re
import sys

FRAME = re.compile(r"^\s*[0-9a-f]+ (?P<sym>.*?)(?:\+0x[0-9a-f]+)? \((?P<dso>[^)]*)\)\s*$")

# Frames every part calls: skipped when looking for the part a sample belongs to.
SHARED = re.compile(
    r"^(mi_|_mi_|__rust_(alloc|dealloc|realloc)|__mem(move|cpy|cmp|set|chr)|malloc|free|realloc|"
    r"<?core::|<?alloc::|<?std::|__libc_|__GI_|__rustc::|<?futures_util::|<?futures_core::|"
    r"regex_automata::|<?regex::|memchr::|aho_corasick::)"
)

# (part, pattern on a frame's symbol), tried in order on each frame from the leaf up.
PARTS = [
    ("WAF inspection", r"pay_waf::engine|pay_waf::rules|pay_waf::transform|pay_waf::screen|pay_waf::prefilter|libinjection"),
    ("WAF proxy", r"pay_waf::"),
    ("JSON (serde_json)", r"serde_json|serde_core|serde::|serde_path_to_error"),
    ("database client (sqlx)", r"sqlx"),
    ("TLS (rustls)", r"rustls|ring::|ring_core"),
    ("HTTP (hyper)", r"hyper|\bh2::|http::|httparse"),
    # axum's closure around a handler holds the handler's own code, inlined into it.
    ("route handlers (inlined into axum's closures)", r"axum::handler::Handler"),
    # Their polls also hold whatever of the futures beneath them was inlined into them.
    ("HTTP routing (axum, tower)", r"axum|tower"),
    ("logging (tracing)", r"tracing"),
    ("metrics", r"pay_net::metrics"),
    ("runtime (tokio)", r"tokio::|mio::"),
    ("crypto (sha2, hmac, aes)", r"sha2::|hmac::|aes|ghash|chacha|p256"),
    ("clock reads", r"clock_gettime"),
]
PARTS = [(name, re.compile(p)) for name, p in PARTS]
OWN_CRATE = re.compile(r"(pay_[a-z_]+|paymentd|loadgen)::")
KERNEL_NET = re.compile(r"tcp_|ip_|sock|net_|skb|napi|__send|__recv|recvfrom|sendto|inet_|__dev_queue")


def part_of(frames):
    """The part one sample belongs to; `frames` are (symbol, dso) from the leaf up."""
    if frames and "kernel" in frames[0][1]:
        kernel = [s for s, d in frames if "kernel" in d]
        return "kernel: network" if any(KERNEL_NET.search(s) for s in kernel) else "kernel: scheduling and the rest"
    for sym, _ in frames:
        if SHARED.search(sym):
            continue
        for name, pattern in PARTS:
            if pattern.search(sym):
                return name
        own = OWN_CRATE.search(sym)
        if own:
            return own.group(1)
        return "other: " + sym[:60]
    return "allocator, copies (no owner found)"


def main():
    samples = []
    frames = None
    for line in sys.stdin:
        if not line.strip():
            if frames is not None:
                samples.append(frames)
            frames = None
            continue
        if not line.startswith((" ", "\t")):
            frames = []
            continue
        m = FRAME.match(line)
        if m and frames is not None:
            frames.append((m.group("sym"), m.group("dso")))
    if frames:
        samples.append(frames)
    if not samples:
        print("no samples (was perf recorded with --call-graph?)")
        return
    unwound = sum(1 for f in samples if any("worker::run" in s or "thread_start" in s for s, _ in f))
    parts = collections.Counter(part_of(f) for f in samples)
    print(f"{len(samples)} samples; stacks unwound to the worker loop: {100 * unwound / len(samples):.0f} %")
    other = 0
    for name, n in parts.most_common():
        share = 100 * n / len(samples)
        if share < 0.5:
            other += n
            continue
        print(f"  {share:5.1f} %  {name}")
    if other:
        print(f"  {100 * other / len(samples):5.1f} %  (parts under 0.5 % each)")


if __name__ == "__main__":
    main()
