#!/usr/bin/env bash
# Fills .whl/ and .bench/ for the ChemGPT benchmarks on the GPU machine (Python 3.12, no internet):
# the wheels its image lacks, at the versions .venv has, and MOSES's training set. Run it from the repo
# root after `make setup`. With --float8 it also fetches torchao, which only benchmarks/float8_linears.py needs;
# with --painn, schnetpack and the packages it imports, which benchmarks/painn_throughput.py's peer needs
# (antlr4-python3-runtime exists only as a source release, so its pure-Python wheel is built here).
# Then carry .whl and .bench, and start each command there with `source benchmarks/device_setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="pydantic pydantic_core annotated-types typing-inspection typing_extensions selfies rdkit submitit
lightning lightning-utilities psutil ruamel.yaml"
TORCHAO=torchao==0.18.0  # its float8 training is Python over torch._scaled_mm; this one ran on the device's torch 2.11
pins=()
for name in $PACKAGES; do
    pins+=("$name==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
SCHNETPACK="schnetpack ase matscipy hydra-core omegaconf hydra-colorlog colorlog fasteners dirsync torch-ema"
built=()
for arg in "$@"; do
    case "$arg" in
        --float8) pins+=("$TORCHAO") ;;
        --painn)
            for name in $SCHNETPACK; do
                pins+=("$name==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
            done
            built+=("antlr4-python3-runtime==4.9.3") ;;  # hydra-core's pin
        *) echo "device_wheels.sh: unknown argument '$arg' (use --float8 and/or --painn)" >&2; exit 2 ;;
    esac
done
rm -rf .whl  # one version of each package: device_setup.sh installs every wheel here
mkdir -p .whl .bench
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
if [ ${#built[@]} -gt 0 ]; then
    python3 -m pip wheel --quiet --no-deps -w .whl "${built[@]}"
fi
.venv/bin/python - <<'EOF'
import importlib.metadata, shutil
shutil.copyfile(importlib.metadata.distribution("molsets").locate_file("moses/dataset/data/train.csv.gz"),
                ".bench/moses_train.csv.gz")
EOF
du -sh .whl .bench
