#!/usr/bin/env bash
# Proves docs/adding-a-service.md: on a copy of the repository (uncommitted files included),
# adds an example service with tools/scaffold/new-service.py, then checks what the guide
# promises — it builds cleanly (fmt, clippy), `serve all` starts it, the gateway routes and
# documents it and readiness probes reach it (`cargo test -p <name>`), the configuration
# reference covers it, and compose, Prometheus and every Kubernetes overlay carry it — derived
# from SERVICES by the deployment test, not written by hand — and pass their validators
# (.ci/infra). Prints the files written outside the new crate: by hand (the scaffold's edits, at
# most 5 with Cargo.lock) and derived.
#
#   tools/scaffold/prove.sh [name] [port]      (default: payouts 8086)
#
# It shares the repository's cargo target directory, so the registry's crates are not compiled
# again — only the workspace's own. Cargo names their artifacts alike in both trees, so the
# next build here compiles them again too (see `finish`); .ci/run runs this last.
set -euo pipefail

name=${1:-payouts}
port=${2:-8086}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
# Files outside the new crate written by hand (the scaffold's edits, and Cargo.lock by cargo).
max_touched=${BOURSE_SCAFFOLD_MAX_TOUCHED:-5}

copy=$(mktemp -d "${TMPDIR:-/tmp}/bourse-scaffold.XXXXXX")
# Cargo judges a crate fresh by its sources' mtimes, relative to the package: after the copy's
# build, this tree's older sources would look fresh against the copy's newer artifacts — a
# gateway built with the example's routes, say. Touching here every file the copy changed
# makes the next build here compile those crates again.
finish() {
  if [ -d "$copy/.git" ]; then
    git -C "$copy" status --porcelain --untracked-files=no | awk '{print $2}' | while read -r path; do
      [ -f "$repo/$path" ] && touch "$repo/$path"
    done
  fi
  rm -rf "$copy"
}
trap finish EXIT
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$repo" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$copy"
cd "$copy"
git init -q && git add -A && git -c user.name=scaffold -c user.email=scaffold@localhost commit -qm base

echo "== tools/scaffold/new-service.py $name $port"
python3 tools/scaffold/new-service.py "$name" "$port"

changed() { git status --porcelain --untracked-files=all | awk '{print $2}' | grep -v "^crates/services/$name/" | grep -v '^infra.log$' || true; }
cargo update --workspace --offline --quiet  # the lock file learns the new crate, as any build does
by_hand=$(changed)

echo "== the deployment files and the configuration reference, derived as the guide says"
tests_ok() { grep -E "^test result|FAILED|panicked"; }
if cargo test -q -p bourse --test deployment >/dev/null 2>&1; then
  echo "the deployment test passed before deriving: it does not see the new service" >&2; exit 1
fi
BOURSE_UPDATE_DOCS=1 cargo test -q -p bourse --test deployment 2>&1 | tests_ok
BOURSE_UPDATE_DOCS=1 cargo test -q -p bourse --test configuration 2>&1 | tests_ok
cargo test -q -p bourse --test deployment --test configuration 2>&1 | tests_ok

echo "== fmt, clippy and the API documentation"
cargo fmt --all --check
cargo clippy -q -p "$name" -p bourse -p gateway --all-targets -- -D warnings
# As .ci/run checks it: the new crate's documentation has no broken link.
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc -q --no-deps --document-private-items -p "$name"

echo "== serve all: started, routed, documented, probed (cargo test -p $name)"
cargo test -q -p "$name" -p gateway 2>&1 | grep -E "^test result|FAILED|panicked"

echo "== compose, Prometheus, Kubernetes (.ci/infra on the copy)"
# .ci/infra first: it installs the validators it needs (docker-compose among them).
bash .ci/infra > infra.log 2>&1 || { tail -40 infra.log >&2; exit 1; }
# Each output is read whole before it is searched: under pipefail, `… | grep -q` fails when
# grep stops at its first match and the writer, still writing, dies of the closed pipe.
services=$(docker-compose -f docker-compose.yml config --services)
grep -qx "$name" <<< "$services" || { echo "compose has no $name service" >&2; exit 1; }
for overlay in deploy/k8s/overlays/*/; do
  rendered=$(kubectl kustomize "$overlay")
  grep -q "^  name: $name$" <<< "$rendered" || { echo "$overlay renders no $name" >&2; exit 1; }
done

count=$(echo "$by_hand" | grep -c . || true)
echo "== files written by hand outside crates/services/$name: $count (at most $max_touched)"
echo "$by_hand" | sed 's/^/  /'
echo "== derived from SERVICES (the deployment and configuration tests)"
comm -13 <(echo "$by_hand" | sort) <(changed | sort) | sed 's/^/  /'
if [ "$count" -gt "$max_touched" ]; then
  echo "adding a service takes more hand edits than before ($count > $max_touched)" >&2
  exit 1
fi
echo "== it refuses what it cannot do whole, and then writes nothing"
snapshot() { git status --porcelain --untracked-files=all | sort | md5sum; }
refusals=$(mktemp)
if python3 tools/scaffold/new-service.py "$name" "$port" 2>"$refusals"; then
  echo "a second $name was accepted" >&2; exit 1
fi
sed -i 's/^pub static ROUTES: /pub static ROUTE_LIST: /' crates/services/gateway/src/route_table.rs
drifted=$(snapshot)
status=0
python3 tools/scaffold/new-service.py other 8099 2>"$refusals" || status=$?
if [ "$status" != 1 ] || ! grep -q "route_table.rs" "$refusals"; then
  echo "a drifted anchor was not refused (exit $status):" >&2; cat "$refusals" >&2; exit 1
fi
[ "$(snapshot)" = "$drifted" ] || { echo "a refused scaffold wrote files" >&2; exit 1; }
rm -f "$refusals"
echo "scaffold proof: ok"
