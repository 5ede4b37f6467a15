#!/usr/bin/env bash
# CPU each program used over an interval, in cores, from /proc/<pid>/stat (utime + stime of
# every process, summed by command name) — the machine-wide split of docs/performance.md.
# `perf record -a` does not see other processes in this sandbox; /proc does.
# Usage: tools/wrk/cpu-by-process.sh [seconds]   (inside a measured run, e.g. once
# `pgrep -x wrk` finds the load, or once measure-order-entry.sh printed "warmed up")
#        tools/wrk/cpu-by-process.sh --snapshot  (CPU seconds used so far, by program: two of
# these around a run, as measure-order-entry.sh takes them, give the CPU of that run)
set -euo pipefail
snapshot() {
  local tck
  tck=$(getconf CLK_TCK)
  for stat in /proc/[0-9]*/stat; do
    cat "$stat" 2>/dev/null || true
  done | awk -v t="$tck" '{
    name = $0; sub(/^[^(]*\(/, "", name); sub(/\).*/, "", name); sub(/[:\/].*/, "", name)
    rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
    cpu[name] += (f[12] + f[13]) / t
  } END { for (n in cpu) printf "%s %.3f\n", n, cpu[n] }' | sort
}
if [[ ${1:-} == --snapshot ]]; then
  snapshot
  exit
fi
seconds=${1:-10}
before=$(snapshot)
sleep "$seconds"
after=$(snapshot)
join <(echo "$before") <(echo "$after") |
  awk -v s="$seconds" '{ d = ($3 - $2) / s; if (d >= 0.01) printf "%-20s %5.2f cores\n", $1, d }' |
  sort -k2 -nr
