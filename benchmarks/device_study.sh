#!/usr/bin/env bash
# Run a study on the GPU machine, which has no DVC, inside a time limit, and pack what the archive
# needs (results without checkpoints or resume state; data.json, split.json) into $OUT/<study>.tar.gz.
# The stages in SERIAL run one after another; then each STAGE:REGEX of GROUPS runs the cells of that
# stage whose key matches in a process of its own, side by side on the one GPU (small models leave
# most of it idle). The work folder
# .runs/<study> is git-ignored: a later call on the same warm machine, or one that carries the folder,
# skips finished cells, and a cell stopped by the limit resumes from its checkpoint. From the repo
# root, after `source benchmarks/device_setup.sh`:
#   benchmarks/device_study.sh specs/chemgpt-moses-scaling.yaml 540 "data split tpe calibrate select" \
#       "train:^l- train:^s- train:^xs- train:^xxs-"
set -uo pipefail
spec=$(realpath "$1") limit=$2 serial=$3 groups=${4:-}
study=$(basename "$spec" .yaml)
work=.runs/$study
mkdir -p "$work" && cd "$work" || exit 1
[ -f params.yaml ] || python3 -c "import sys; from chemspec import api; api.compile(sys.argv[1])" "$spec" || exit 1
start=$(date +%s)
# shellcheck disable=SC2086
timeout -s TERM -k 30 "$limit" python3 ../../benchmarks/run_stages.py $serial 2>&1 | tee -a run.log
status=$?
left=$(( limit - ($(date +%s) - start) ))
if [ -n "$groups" ] && [ "$left" -gt 10 ]; then
    # One CPU share per process, so that N processes do not each start a thread per core. The GPU
    # is time-sliced between processes: side by side pays where a cell's steps are CPU-bound.
    count=$(wc -w <<< "$groups")
    export OMP_NUM_THREADS=$(( $(nproc) / count > 0 ? $(nproc) / count : 1 ))
    for group in $groups; do
        timeout -s TERM -k 30 "$left" python3 ../../benchmarks/run_stages.py "${group%%:*}" --cells "${group#*:}" \
            > "run-group-${group//[^A-Za-z0-9]/_}.log" 2>&1 &
    done
    for job in $(jobs -p); do
        wait "$job"
        code=$?
        if [ "$code" -ne 0 ] && { [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; }; then
            status=$code  # a failure outranks a time-out, which outranks success
        fi
    done
    cat run-group-*.log | tee -a run.log
fi
echo "device_study: $study ran $(( $(date +%s) - start )) s" | tee -a run.log
# A first call stopped before its data or results exist packs what there is.
tar czf "${OUT:-.}/$study.tar.gz" --ignore-failed-read --exclude='model' --exclude='.resume' --exclude='*.npy' \
    --exclude='molecules.csv' --exclude='tokenizer' --exclude='atoms.npz' params.yaml run*.log results data || exit 1
ls -la "${OUT:-.}/$study.tar.gz"
# A stage stopped by the limit (124) resumes on the next call; another failure fails this one.
exit $(( status == 124 ? 0 : status ))
