#!/usr/bin/env bash
# Run stages of a study on the GPU machine, which has no DVC, inside a time limit, and pack what the
# archive needs (results without checkpoints or resume state; data.json, split.json) into
# $OUT/<study>.tar.gz. The work folder .runs/<study> is git-ignored, so a second call on the same
# warm machine resumes: finished cells are skipped and a cell stopped by the limit resumes from its
# checkpoint. Usage, from the repo root after `source benchmarks/device_setup.sh`:
#   benchmarks/device_study.sh specs/chemgpt-moses-scaling.yaml 540 data split tpe calibrate select train
set -u
spec=$1 limit=$2
shift 2
study=$(basename "$spec" .yaml)
work=.runs/$study
mkdir -p "$work" && cd "$work" || exit 1
[ -f params.yaml ] || python3 -c "from chemspec import api; api.compile('../../$spec')" || exit 1
start=$(date +%s)
timeout -s TERM -k 30 "$limit" python3 ../../benchmarks/run_stages.py "$@" 2>&1 | tee -a run.log
echo "device_study: $study stages $* ran $(( $(date +%s) - start )) s" | tee -a run.log
tar czf "${OUT:-.}/$study.tar.gz" --exclude='model' --exclude='.resume' --exclude='*.npy' \
    --exclude='molecules.csv' --exclude='tokenizer' --exclude='atoms.npz' params.yaml run.log results data 2>/dev/null
ls -la "${OUT:-.}/$study.tar.gz"
