#!/usr/bin/env bash
# Soak test of the torchrun path: N consecutive tiny 2-process `dnnbench run` cells (default 20),
# counting exit codes. Catches intermittent failures (gloo aborts at shutdown, rendezvous races)
# that one run of the test suite would not. Not part of the test suite; run it by hand:
#
#   benchmarks/soak_torchrun.sh            # 20 runs, about 20 s each on 2 CPU cores
#   benchmarks/soak_torchrun.sh 50         # more runs
#   DNNBENCH=/path/to/dnnbench benchmarks/soak_torchrun.sh
#
# Prints one line per run and "N/20 exited 0"; exits 0 only when every run did.
set -u

runs=${1:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${DNNBENCH:-}" ]]; then
    if [[ -x "$repo/.venv/bin/dnnbench" ]]; then DNNBENCH="$repo/.venv/bin/dnnbench"; else DNNBENCH=dnnbench; fi
fi
out=$(mktemp -d -t dnnbench-soak.XXXXXX)
overrides=(framework=ddp model=resnet18 gpus=2 dataset=synthetic batch_size=8 steps=2 warmup_steps=1
           val_steps=2 dataset.train_samples=64 dataset.val_samples=32)

declare -A codes=()
ok=0
started=$(date +%s)
for i in $(seq 1 "$runs"); do
    t0=$(date +%s.%N)
    "$DNNBENCH" run "${overrides[@]}" --quiet --out "$out/run_$i" >"$out/run_$i.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    codes[$rc]=$(( ${codes[$rc]:-0} + 1 ))
    if [[ $rc -eq 0 ]]; then
        ok=$((ok + 1))
        note=""
    else
        note="  <- $(grep -m1 '^Error:' "$out/run_$i.log" | cut -c1-160)"
    fi
    printf 'run %2d/%d exit %d (%.1f s)%s\n' "$i" "$runs" "$rc" "$(awk "BEGIN{print $t1 - $t0}")" "$note"
done

summary=""
for rc in $(printf '%s\n' "${!codes[@]}" | sort -n); do summary+="exit $rc: ${codes[$rc]}  "; done
echo "exit codes: $summary"
echo "logs and run folders: $out ($(( $(date +%s) - started )) s in all)"
echo "$ok/$runs exited 0"
[[ $ok -eq $runs ]]
