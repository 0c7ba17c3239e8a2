# Source this from the repo root on the GPU machine (no internet):  source benchmarks/device_setup.sh
# Installs the wheels carried in .whl/ (Python 3.12, manylinux x86_64; benchmarks/device_wheels.sh fills it) into
# /tmp/site and puts /tmp/site and ./src on PYTHONPATH. Only packages the device image lacks are in
# .whl/ (plus lightning, lightning-utilities and typing-extensions, pinned to what chemspec and
# pydantic need); torch, numpy, torchmetrics, pytorch-lightning, transformers and tokenizers stay the
# device's own, since /tmp/site shadows whatever it holds.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "device_setup.sh must be sourced: source benchmarks/device_setup.sh" >&2
    exit 2
fi
if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "device_setup.sh: no .whl/*.whl here ($PWD); run it from the repo root with .whl carried" >&2
    return 1
fi
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl; then
    echo "device_setup.sh: installing .whl/*.whl failed (above); PYTHONPATH is unchanged" >&2
    return 1
fi
export PYTHONPATH=/tmp/site:$PWD/src
# MOSES: the molsets wheel (51 MB) is too big to travel, so its training set travels alone as
# .bench/moses_train.csv.gz (the same bytes: sha256 786f0313...) and is installed here under a
# minimal molsets dist-info, where chemspec's data stage looks for it.
if [ -f .bench/moses_train.csv.gz ] && ! python3 -c "import importlib.metadata as m; m.distribution('molsets')" 2>/dev/null; then
    mkdir -p /tmp/site/molsets-0.3.1.dist-info /tmp/site/moses/dataset/data \
        && cp .bench/moses_train.csv.gz /tmp/site/moses/dataset/data/train.csv.gz \
        && printf 'Metadata-Version: 2.1\nName: molsets\nVersion: 0.3.1\n' > /tmp/site/molsets-0.3.1.dist-info/METADATA \
        && : > /tmp/site/molsets-0.3.1.dist-info/RECORD
fi
