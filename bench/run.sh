#!/usr/bin/env bash
# Builds runwarden and runwarden-bench in release mode and runs the benchmark suite.
#
#   bench/run.sh                    # whole suite (about 3 minutes on 2 cores, build included)
#   bench/run.sh --quick            # smaller sizes, shorter windows (about 1 minute)
#   bench/run.sh --only webhook-ack,event-to-cancel
#   bench/run.sh --only webhook-ack,event-to-cancel --postgres postgres://USER@HOST:PORT/postgres
#                                   # those figures on PostgreSQL (a fresh database per bot;
#                                   # or RUNWARDEN_BENCH_POSTGRES=URL)
#
# Prints a table (Markdown) on stdout and writes bench-results/latest.json (or the path
# given with --json). Only loopback addresses are used. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

json="bench-results/latest.json"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --json) json="$2"; shift 2 ;;
    --json=*) json="${1#--json=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

cargo build --release --locked --bin runwarden --bin runwarden-bench
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${target_dir:-target}"
exec "$target_dir/release/runwarden-bench" \
  --runwarden "$target_dir/release/runwarden" --json "$json" ${args[@]+"${args[@]}"}
