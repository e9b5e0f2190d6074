#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (cargo-afl, stable Rust: LLVM's sancov passes, no
# nightly): builds the instrumented gigmcp-fuzz-afl once, then runs each target for a fixed
# time from its committed corpus (fuzz/corpus/<target>/). Any crash (a broken property
# panics) fails the run and is listed, to be copied into the corpus with its fix.
#
#   fuzz/afl.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 10 s, every target)
#
# Installs cargo-afl (crates.io) and builds its AFL++ runtime when missing, unless
# GIGMCP_FUZZ_AFL_INSTALL=0; without them it says so and exits 3, so that callers can tell a
# skip from a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(dns jsonrpc framing http_checks rewriter manifest init_args unpack cjson tuf_metadata)
fi
if ! cargo afl --version >/dev/null 2>&1 && [[ "${GIGMCP_FUZZ_AFL_INSTALL:-1}" != 0 ]]; then
  echo "afl: installing cargo-afl" >&2
  cargo install --locked cargo-afl --version 0.18.2 >&2
fi
if ! cargo afl --version >/dev/null 2>&1; then
  echo "afl: SKIPPED: cargo-afl is not installed (cargo install cargo-afl)" >&2
  exit 3
fi
# The AFL++ runtime for this rustc, built once per toolchain (it refuses when already built).
cargo afl config --build >/dev/null 2>&1 || true

out=target/afl
cargo afl build --locked -p gigmcp-fuzz --features afl --bin gigmcp-fuzz-afl --target-dir "$out" >&2
bin="$out/debug/gigmcp-fuzz-afl"

# No core_pattern or CPU-governor changes on a shared machine: tell AFL++ not to ask.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
failed=()
for t in "${targets[@]}"; do
  dir="$out/runs/$t"
  rm -rf "$dir"
  mkdir -p "$out/runs"
  # -V: stop after $secs; -t: a hung input (over 5 s) counts as a failure too.
  cargo afl fuzz -V "$secs" -t 5000 -i "fuzz/corpus/$t" -o "$dir" -- "$bin" "$t" >"$dir.log" 2>&1 || {
    echo "afl: $t: afl-fuzz failed (log: $dir.log)" >&2
    tail -20 "$dir.log" >&2
    failed+=("$t")
    continue
  }
  stats="$dir/default/fuzzer_stats"
  execs=$(sed -n 's/^execs_done *: *//p' "$stats")
  edges=$(sed -n 's/^edges_found *: *//p' "$stats")
  crashes=("$dir"/default/crashes/id:* "$dir"/default/hangs/id:*)
  found=0
  for c in "${crashes[@]}"; do [[ -e "$c" ]] && found=$((found + 1)); done
  echo "afl: $t: $execs execs in $secs s, $edges edges, $found crashes/hangs" >&2
  if ((found > 0)); then
    for c in "${crashes[@]}"; do [[ -e "$c" ]] && echo "  $c" >&2; done
    echo "  replay one: $bin $t < FILE" >&2
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "afl: FAILED: ${failed[*]}" >&2
  exit 1
fi
