#!/usr/bin/env bash
# Runs the cargo-fuzz targets of yizhan-proto for a bounded time each (tier T4).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 seconds, targets command readers session
#
# Uses `cargo fuzz run -s none` (no sanitizer), which works on stable Rust. For the
# AddressSanitizer build on stable, run cargo fuzz yourself with RUSTC_BOOTSTRAP=1 and without
# `-s none`. The corpora are seeded from tests/dialogs/*.dialog. Every crash libFuzzer finds is
# copied to crates/yizhan-proto/tests/fuzz_regressions/, where `cargo test -p yizhan-proto`
# replays it through all three harnesses; the script then exits non-zero.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(command readers session header explain); fi
regressions="$root/crates/yizhan-proto/tests/fuzz_regressions"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"

# Seed corpora: the client side of every golden dialogue, whole (session) and line by line
# (command, readers). Seeds never overwrite what the fuzzer found earlier.
for target in command readers session header explain; do mkdir -p "corpus/$target"; done
for dialog in "$root"/tests/dialogs/*.dialog; do
    name=$(basename "$dialog" .dialog)
    # C: lines with CRLF; the session harness reads its first byte as the chunking mode.
    { printf '\x03'; sed -n 's/^C: \{0,1\}//p' "$dialog" | sed 's/$/\r/'; } > "corpus/session/$name"
    { printf '\x00\x40'; sed -n 's/^C: \{0,1\}//p' "$dialog" | sed 's/$/\r/'; } > "corpus/readers/$name"
    i=0
    while IFS= read -r line; do
        i=$((i + 1))
        printf '%s' "$line" > "corpus/command/$name-$i"
    done < <(sed -n 's/^C: //p' "$dialog")
done
printf '\x00Authentication-Results: mx.test.example; spf=pass\r\nAuthentication-Results: (c) other.example;\r\n\tdkim=pass\r\nSubject: x\r\n\r\nbody\r\n' \
    > corpus/header/seed-forged
# The explainer: the article's transcript, and the golden dialogues as C:/S: transcripts.
cp "$root/crates/yizhan-explain/tests/golden/article.txt" corpus/explain/article
for dialog in "$root"/tests/dialogs/*.dialog; do
    grep -E '^(C|S): ' "$dialog" > "corpus/explain/$(basename "$dialog" .dialog)" || true
done

status=0
summary=""
for target in "${targets[@]}"; do
    log="artifacts/$target.log"
    mkdir -p "artifacts/$target"
    echo "== fuzzing $target for ${seconds}s"
    if cargo fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "$log"; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    stats=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -n 1 || true)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    summary+="$target: $result; ${stats:-no DONE line}; executed ${execs:-?}"$'\n'
    for crash in artifacts/"$target"/crash-* artifacts/"$target"/oom-* artifacts/"$target"/timeout-*; do
        [ -e "$crash" ] || continue
        dest="$regressions/$target-$(basename "$crash")"
        cp "$crash" "$dest"
        echo "saved $crash as $dest"
        status=1
    done
done

echo
echo "== summary (${seconds}s per target)"
printf '%s' "$summary"
exit $status
