#!/usr/bin/env python3
"""Where a bourse process spends its CPU, from a call-graph profile (docs/performance.md).

Record inside a measured run, then attribute:

    perf record -o perf.data -p "$(pgrep -f 'bourse serve all')" -F 199 --call-graph dwarf -- sleep 6
    perf script -i perf.data > perf.txt
    tools/wrk/attribute-profile.py perf.txt

It prints three views of the same samples:
- parts: each sample counted once, in the first part (top to bottom of PARTS) any of its frames
  belongs to — the shares add up to 100%;
- inclusive: the share of samples with any frame matching each pattern (they overlap);
- statements of the place handler: the database calls under orders' place handler, by the
  function that made them (the instrument read, the idempotency look-up, ...);
- self time: each sample counted in the function it was in (its innermost frame), by crate
  (mimalloc's `mi_` functions as "mimalloc", the C library's `__` ones as "libc") and by
  function.
"""

import collections
import re
import sys

# (name, pattern): first match wins, so the more specific parts come first.
PARTS = [
    ("Redis connection tasks (I/O, RESP parsing)", r"redis::aio::multiplexed_connection"),
    ("Redis commands", r"redis::"),
    ("gateway", r"gateway::"),
    ("orders' place handler", r"orders::http::orders::place"),
    ("the matching task", r"orders::engine::run"),
    ("orders, other", r"orders::"),
    ("risk", r"risk::"),
    ("settlement", r"settlement::"),
    ("alerting", r"alerting::"),
    ("events (relay, consumers)", r"events::"),
    ("sqlx outside the above", r"sqlx"),
    ("axum serving", r"axum::serve"),
    ("tokio", r"tokio::"),
]

INCLUSIVE = [
    r"sqlx",
    r"events::consumer",
    r"risk::project::Projector",
    r"risk::ledger_feed",
    r"risk::http::checks",
    r"settlement::settle",
    r"events::relay",
    r"gateway::stream",
]


def samples(path):
    with open(path, encoding="utf-8", errors="replace") as text:
        for block in text.read().split("\n\n"):
            lines = block.strip().split("\n")
            if len(lines) > 1:
                # Innermost frame first, as perf script prints them.
                yield [line.strip() for line in lines[1:]]


def frame_name(line):
    line = re.sub(r"^[0-9a-f]+\s+", "", line)
    line = re.sub(r"\+0x[0-9a-f]+", "", line)
    return re.sub(r"\s+\(\S*\)$", "", line)


def innermost(frames):
    """The function a sample was in, without its hash suffix."""
    return re.sub(r"::h[0-9a-f]{16}$", "", frame_name(frames[0]))


def crate_of(function):
    if function.startswith(("mi_", "_mi_")):
        return "mimalloc"
    if function.startswith("__"):
        return "libc"
    found = re.match(r"^<?&?(?:mut )?([a-z_][a-z0-9_]*)::", function)
    return found.group(1) if found else function[:30]


def main(path):
    stacks = list(samples(path))
    total = len(stacks)
    if total == 0:
        sys.exit(f"no samples in {path}")
    parts = collections.Counter()
    inclusive = collections.Counter()
    statements = collections.Counter()
    for frames in stacks:
        joined = "\n".join(frames)
        part = next((name for name, pattern in PARTS if re.search(pattern, joined)), "other")
        parts[part] += 1
        for pattern in INCLUSIVE:
            if re.search(pattern, joined):
                inclusive[pattern] += 1
        if re.search(r"orders::http::orders::place", joined):
            database = [i for i, frame in enumerate(frames) if "sqlx" in frame]
            if database:
                outermost = max(database)
                # The outermost sqlx frame names the query's row type or the pool call; the
                # frame above it, the caller.
                statements[frame_name(frames[outermost])[:100]] += 1

    print(f"{total} samples\n\nparts (each sample once):")
    for name, count in parts.most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive:")
    for pattern in INCLUSIVE:
        print(f"  {100 * inclusive[pattern] / total:5.1f}%  {pattern}")
    print("\nstatements of the place handler, by outermost sqlx frame:")
    for name, count in statements.most_common(6):
        print(f"  {100 * count / total:5.1f}%  {name}")
    functions = collections.Counter(innermost(frames) for frames in stacks)
    crates = collections.Counter()
    for function, count in functions.items():
        crates[crate_of(function)] += count
    print("\nself time by crate:")
    for name, count in crates.most_common(12):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\nself time by function:")
    for name, count in functions.most_common(12):
        print(f"  {100 * count / total:5.1f}%  {name[:110]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
