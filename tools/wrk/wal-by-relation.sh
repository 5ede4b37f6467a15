#!/usr/bin/env bash
# What a run wrote to PostgreSQL's write-ahead log, by relation, per order: every heap row and
# index entry written is a WAL record, so this counts the writes an order costs the database in
# a figure that does not move with the machine's speed (docs/performance.md, "What an order
# writes"). measure-order-entry.sh calls it with BOURSE_PERF_WAL=1; by hand:
#   tools/wrk/wal-by-relation.sh <database> <start LSN> <end LSN> <orders> [port]
# Needs pg_waldump (pg_config --bindir) and read access to the server's pg_wal: run as root or
# as the server's user. The range must still be on disk: a checkpoint recycles old segments, and
# DROP DATABASE forces one, so call it before the run's database is dropped.
# BOURSE_PERF_WAL_TOP (default 20): how many lines each list shows.
set -euo pipefail
database=$1 start=$2 end=$3 orders=$4 port=${5:-${PGPORT:-5432}}
sql() { psql -qtA -h 127.0.0.1 -p "$port" -U postgres -d "$database" -c "$1"; }
wal_dir="$(sql 'SHOW data_directory')/pg_wal"
# Relation file numbers to names, for this database's relations (the records name files).
names=$(mktemp /tmp/bourse-wal-names.XXXXXX)
trap 'rm -f "$names"' EXIT
# An index is named with its table's name, so its writes add up to the table's below.
sql "SELECT pg_relation_filenode(c.oid) || '|' || n.nspname || '.' || coalesce(t.relname, c.relname)
            || '|' || n.nspname || '.' || c.relname
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_index i ON i.indexrelid = c.oid
       LEFT JOIN pg_class t ON t.oid = i.indrelid
      WHERE pg_relation_filenode(c.oid) IS NOT NULL" > "$names"
# Per record: its resource manager, its type, the file of its first block's relation (none
# for commits and the like, counted under their resource manager) and its total length.
"$(pg_config --bindir)/pg_waldump" -p "$wal_dir" -s "$start" -e "$end" 2>/dev/null \
  | awk '{
      rel = "-"
      if (match($0, /blkref #0: rel [0-9]+\/[0-9]+\/[0-9]+/)) { n = split(substr($0, RSTART, RLENGTH), parts, "/"); rel = parts[n] }
      match($0, /\(rec\/tot\): +[0-9]+\/ *[0-9]+/); split(substr($0, RSTART, RLENGTH), len, "/")
      match($0, /desc: [A-Z_+0-9]+/)
      print $2, substr($0, RSTART + 6, RLENGTH - 6), rel, len[3] + 0
    }' \
  | awk -v orders="$orders" -v top="${BOURSE_PERF_WAL_TOP:-20}" '
      NR == FNR { split($0, a, "|"); table[a[1]] = a[2]; relation[a[1]] = a[3]; next }
      {
        if ($3 in table) { t = table[$3]; r = relation[$3] } else { t = ($3 == "-" ? "(" $1 ")" : "(another database)"); r = t }
        what = r "  " $1 " " $2
        n[what]++; b[what] += $4; tn[t]++; tb[t] += $4; total_n++; total_b += $4
        if ($1 == "Btree" && $2 ~ /^INSERT/) { index_entries++; ti[t]++ }
      }
      END {
        if (total_n == 0) { print "WAL: no records read (segments recycled, or pg_wal not readable by this user?)"; exit }
        printf "WAL per order: %.0f bytes, %.1f records, %.1f index entries (%d orders)\n", total_b / orders, total_n / orders, index_entries / orders, orders; fflush()
        print "by table (its indexes included): records, index entries, bytes per order"; fflush()
        for (t in tn) printf "  %6.2f %6.2f %6.0f  %s\n", tn[t] / orders, ti[t] / orders, tb[t] / orders, t | "sort -k1,1 -rn | head -" top
        close("sort -k1,1 -rn | head -" top)
        print "by relation and record type: records, bytes per order"; fflush()
        for (w in n) printf "  %6.2f %6.0f  %s\n", n[w] / orders, b[w] / orders, w | "sort -k1,1 -rn | head -" top
      }' "$names" -
