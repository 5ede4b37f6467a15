#!/usr/bin/env bash
# A/B of builds of bourse on the order path, in alternating runs of the same load, so a noisy
# machine's drift falls on every build alike (docs/performance.md). Each run's WAL written per
# order is printed too: a count of the database's writes that the drift does not move.
# Usage: tools/wrk/compare-builds.sh <connections> <rounds> <bourse binary>...   (an even number of rounds)
# e.g.   cp target/release/bourse /tmp/bourse-a   (build the other change, then)
#        tools/wrk/compare-builds.sh 32 2 /tmp/bourse-a target/release/bourse
set -euo pipefail
cd "$(dirname "$0")/../.."
connections=$1 rounds=$2
shift 2
builds=("$@")
for round in $(seq 1 "$rounds"); do
  # Even rounds run the builds in the opposite order: the build run second in a round tends to
  # come out ahead by up to ~5% (docs/performance.md, "An order bias in compare-builds.sh"),
  # so an even number of rounds gives each build each place equally often.
  order=("${builds[@]}")
  if (( round % 2 == 0 )); then
    order=()
    for (( i = ${#builds[@]} - 1; i >= 0; i-- )); do order+=("${builds[i]}"); done
  fi
  for bin in "${order[@]}"; do
    log=$(mktemp /tmp/bourse-compare.XXXXXX)
    BOURSE_PERF_BIN=$bin BOURSE_PERF_DATABASE_PARAMS=${BOURSE_PERF_DATABASE_PARAMS:-?sslmode=disable} \
      tools/wrk/measure-order-entry.sh "$connections" 20s 8 > "$log" 2>&1
    awk -v bin="$bin" -v round="$round" '
      /^Requests\/sec/ { rps = $2 }
      /^p99 latency/ { p99 = $3 }
      /^non-2xx/ { bad = $3 }
      /orders_matching_batch_seconds_sum/ { busy = $2 }
      /orders_matching_batch_size_sum/ { orders = $2 }
      /orders_matching_batch_size_count/ { batches = $2 }
      /^settled:/ { settled = $2 " of " $4 }
      /orders \/ read =/ { ratio = $NF }
      /^reconciliation:/ { reconciled = $2 }
      /^CPU per order:/ { cpu = $4 }
      /^WAL written per order:/ { wal = $5 }
      END { printf "round %s  %-40s %8s orders/s  p99 %s ms  non-2xx %s  matching busy %.1f s  batch %.1f orders  settled %s  reconciliation %s  orders/read %s  CPU/order %s ms  WAL/order %s bytes\n", round, bin, rps, p99, bad, busy, (batches > 0 ? orders / batches : 0), settled, reconciled, ratio, cpu, wal }' "$log"
    rm -f "$log"
  done
done
