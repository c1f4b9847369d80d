#!/usr/bin/env bash
# Soak test of the horovodrun path (issue 4's acceptance): N consecutive runs (default 10) of
#   dnnbench run framework=horovod model=resnet18 gpus=2 dataset=synthetic
# counting exit codes; a run only counts as exit 0 if both rank dumps hold identical parameter
# digests. Catches intermittent failures (gloo aborts at shutdown, rendezvous timeouts,
# hvd.shutdown hangs) that one run of the test suite would not. Not part of the test suite:
#
#   benchmarks/soak_horovod.sh             # 10 runs, about 40 s each on 2 busy CPU cores
#   benchmarks/soak_horovod.sh 50          # more runs
#   DNNBENCH=/path/to/dnnbench benchmarks/soak_horovod.sh
#
# Prints one line per run and "N/10 exited 0"; exits 0 only when every run did.
set -u

runs=${1:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${DNNBENCH:-}" ]]; then
    if [[ -x "$repo/.venv/bin/dnnbench" ]]; then DNNBENCH="$repo/.venv/bin/dnnbench"; else DNNBENCH=dnnbench; fi
fi
out=$(mktemp -d -t dnnbench-soak-horovod.XXXXXX)
overrides=(framework=horovod model=resnet18 gpus=2 dataset=synthetic)
python=$(dirname "$(readlink -f "$DNNBENCH")")/python
[[ -x "$python" ]] || python=python3
# Exit 0, then the check: two dumps, every digest equal (ranks hold identical parameters).
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
