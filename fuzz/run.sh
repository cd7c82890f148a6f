#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (issue 8).
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      # default 60; TARGETS="webhook models" to pick
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Builds the targets with AddressSanitizer and debug assertions, seeds each corpus from
# fuzz/seeds/<target>/ (plus the repo's rules.toml for `config`), runs libFuzzer for
# SECONDS_PER_TARGET, and prints executions, coverage and crashes per target. A crash
# input is copied to tests/fuzz_regressions/<target>/, which `cargo test --test
# fuzz_regressions` replays on stable from then on. Exits 1 if any target crashed.
set -euo pipefail

secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
targets="${TARGETS:-webhook config models}"
cd "$here"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked (and rustup toolchain install nightly)" >&2
    exit 2
fi

echo "building the fuzz targets (nightly, ASan, debug assertions)..."
cargo +nightly fuzz build -O -a >&2
# The binaries are run directly: `cargo fuzz run` would rebuild whenever the sources
# change under it, and every target should fuzz the same build.
bin_dir="target/x86_64-unknown-linux-gnu/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

mkdir -p logs
crashed=0
summary=()
for t in $targets; do
    corpus="corpus/$t"
    seeds="seeds/$t"
    mkdir -p "$corpus" "artifacts/$t"
    cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    if [ "$t" = config ]; then cp -n "$root/rules.toml" "$corpus/repo-rules.toml"; fi
    # Known crash inputs stay in the corpus: a fixed one must stay fixed.
    if [ -d "$root/tests/fuzz_regressions/$t" ]; then
        cp -n "$root/tests/fuzz_regressions/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log="logs/$t.log"
    echo "fuzzing $t for ${secs}s (log: fuzz/$log)..."
    set +e
    "$bin_dir/$t" "$corpus" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs="$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -1 || true)"
    found=()
    for f in artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-* artifacts/"$t"/leak-*; do
        [ -e "$f" ] || continue
        mkdir -p "$root/tests/fuzz_regressions/$t"
        cp "$f" "$root/tests/fuzz_regressions/$t/"
        found+=("tests/fuzz_regressions/$t/$(basename "$f")")
    done
    if [ "$rc" -ne 0 ] || [ "${#found[@]}" -gt 0 ]; then
        crashed=1
        summary+=("$t: FAILED (exit $rc) ${runs:-?} ${cov} inputs: ${found[*]:-none} (see fuzz/$log)")
    else
        summary+=("$t: ok, ${runs:-?}, ${cov}, corpus $(ls "$corpus" | wc -l) files")
    fi
done

echo
echo "== fuzz summary (${secs}s per target) =="
printf '%s\n' "${summary[@]}"
exit "$crashed"
