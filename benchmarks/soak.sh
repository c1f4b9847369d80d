#!/usr/bin/env bash
# Soak test of a launcher path: N consecutive 2-process `dnnbench run` cells, counting exit codes.
# A run counts as exit 0 only when both rank dumps hold identical parameter digests. Catches
# intermittent failures (gloo aborts at shutdown, rendezvous races, hvd.shutdown hangs) that one
# run of the test suite would not. Not part of the test suite; run it by hand:
#
#   benchmarks/soak.sh ddp 20        # torchrun (issue 2's acceptance: 20 runs)
#   benchmarks/soak.sh horovod 10    # horovodrun (issue 4's acceptance: 10 runs)
#   DNNBENCH=/path/to/dnnbench benchmarks/soak.sh ddp 50
#
# Prints one line per run and "N/RUNS exited 0"; exits 0 only when every run did.
set -u

framework=${1:?usage: benchmarks/soak.sh ddp|horovod [RUNS]}
runs=${2:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${DNNBENCH:-}" ]]; then
    if [[ -x "$repo/.venv/bin/dnnbench" ]]; then DNNBENCH="$repo/.venv/bin/dnnbench"; else DNNBENCH=dnnbench; fi
fi
out=$(mktemp -d -t "dnnbench-soak-$framework.XXXXXX")
case "$framework" in
    # The exact acceptance command of issue 4.
    horovod) overrides=(framework=horovod model=resnet18 gpus=2 dataset=synthetic) ;;
    # Tiny, so 20 runs take minutes: what is soaked is start-up and shutdown.
    *) overrides=(framework="$framework" model=resnet18 gpus=2 dataset=synthetic batch_size=8 steps=2
                  warmup_steps=1 val_steps=2 dataset.train_samples=64 dataset.val_samples=32) ;;
esac
python=$(dirname "$(readlink -f "$DNNBENCH")")/python
[[ -x "$python" ]] || python=python3

same_parameters() {
    "$python" - "$1" <<'PY'
import json, pathlib, sys
dumps = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("cells/*/attempt_0/rank_*.json"))]
digests = [d["extra"]["parameter_digests"] for d in dumps]
ok = len(dumps) == 2 and all(x == digests[0] for x in digests) and len(set(digests[0])) == 1
print("" if ok else f"Error: parameter digests differ or dumps missing: {digests}")
sys.exit(0 if ok else 1)
PY
}

declare -A codes=()
ok=0
started=$(date +%s)
for i in $(seq 1 "$runs"); do
    t0=$(date +%s.%N)
    "$DNNBENCH" run "${overrides[@]}" --quiet --out "$out/run_$i" >"$out/run_$i.log" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]] && ! same_parameters "$out/run_$i" >>"$out/run_$i.log"; then rc=99; fi
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
