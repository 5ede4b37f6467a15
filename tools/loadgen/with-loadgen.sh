# Sourced by the loadgen scripts after tools/wrk/start-bourse.sh (which set $bin and $database):
# an admin for loadgen to create its instruments and fund its accounts, and the functions the
# scripts share. Needs $rate and $accounts.
loadgen_password='loadgen admin password 1234'
echo "$loadgen_password" | "$bin" admin create-user --email loadgen-admin@example.com --role admin > /dev/null

# loadgen [flags…]: the load generator against the gateway at $rate actions/s over $accounts
# accounts with 4 WebSocket subscribers; more flags (--duration-secs, --symbol) follow.
loadgen() {
  LOADGEN_ADMIN_PASSWORD=$loadgen_password target/release/loadgen \
    --gateway http://127.0.0.1:8080 --admin-email loadgen-admin@example.com \
    --rate "$rate" --accounts "$accounts" --subscribers 4 "$@"
}

# sql 'statement': one value from the run's database.
sql() { psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "$1"; }

# until_trading pid report symbol: waits until the loadgen running as `pid` has stored its first
# order of `symbol` (signing up and funding come first); if it ended before that, prints its
# `report` and exits as it did.
until_trading() {
  until [[ $(sql "SELECT count(*) > 0 FROM orders.orders WHERE symbol = '$3'") == t ]]; do
    if ! kill -0 "$1" 2>/dev/null; then
      cat "$2"
      wait "$1"
      exit $?
    fi
    sleep 0.2
  done
}
