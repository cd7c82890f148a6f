#!/usr/bin/env bash
# A bounded soak of runwarden (issue 8): the release binary under steady webhooks with
# injected API faults and duplicate deliveries, then 0 lost events, 0 duplicate side
# effects and a drained queue are checked, and RSS and store size are sampled.
#
#   bench/soak.sh                   # 3 minutes at 80 events/s
#   bench/soak.sh --minutes 30      # the 30-minute soak of SPEC §8 case 23
#   bench/soak.sh --minutes 5 --rate 100
#
# Prints a table (Markdown) and writes bench-results/soak.json (or --json PATH). Loopback
# only. Exits 1 if a check fails. See RELIABILITY.md, "Soak".
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=3
rate=80
json="bench-results/soak.json"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --minutes=*) minutes="${1#--minutes=}"; shift ;;
    --rate) rate="$2"; shift 2 ;;
    --rate=*) rate="${1#--rate=}"; shift ;;
    --json) json="$2"; shift 2 ;;
    --json=*) json="${1#--json=}"; shift ;;
    *) echo "usage: bench/soak.sh [--minutes N] [--rate EVENTS_PER_S] [--json PATH]" >&2; exit 2 ;;
  esac
done
seconds="$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); if (s < 1) s = 1; print s }')"

cargo build --release --locked --bin runwarden --bin runwarden-bench
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${target_dir:-target}"
exec "$target_dir/release/runwarden-bench" --only soak --strict \
  --soak-seconds "$seconds" --soak-rate "$rate" \
  --runwarden "$target_dir/release/runwarden" --json "$json"
