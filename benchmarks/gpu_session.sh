#!/usr/bin/env bash
# A lent GPU machine in one command (issue 10's measurements). That machine has torch, torchvision and timm but no
# registry, no lark and no `pip install -e` that builds this project (its setuptools may predate pyproject's
# licence field), and only files under $OUT come back from it. So:
#
#   here, once:  bash benchmarks/gpu_session.sh prepare
#                (lark and graphviz wheels into .whl/, Debian's Fashion-MNIST into .gpudata/, both git-excluded;
#                 the device tool carries them: carry [".whl", ".gpudata"])
#   there:       bash benchmarks/gpu_session.sh tests                      # the CUDA-only tests
#                bash benchmarks/gpu_session.sh bench train --loops default --timeout 100
#                bash benchmarks/gpu_session.sh bench seeds64k --timeout 530
#                bash benchmarks/gpu_session.sh bench jpeg --workers 14 --timeout 120
#
# `bench PART ...` runs benchmarks/gpu_train.py --only PART --record with the data in .gpudata/; its output and
# benchmarks/RESULTS.md (recorded after every part, so a run stopped at the time limit keeps what it measured) are
# copied under $OUT, to be committed here.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

prepare() {
  local exclude
  exclude="$(git rev-parse --git-path info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  touch "$exclude"
  grep -qxF "/.whl/" "$exclude" || echo "/.whl/" >> "$exclude"
  grep -qxF "/.gpudata/" "$exclude" || echo "/.gpudata/" >> "$exclude"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d .whl lark graphviz click networkx  # pure Python; the first two are missing there
  mkdir -p .gpudata
  cp /usr/share/datasets/fashion-mnist/*.gz .gpudata/
  ls .whl .gpudata
}

setup() {  # lark and graphviz from the carried wheels; resdsl and resdsl_cli from the work tree, as installed
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  mkdir -p /tmp/shim
  ln -sfn "$PWD/cli" /tmp/shim/resdsl_cli
  export PYTHONPATH="/tmp/site:/tmp/shim:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export OUT="${OUT:-$PWD/gpu-out}"
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
}

case "${1:-}" in
  prepare) prepare ;;
  tests)
    setup
    timeout 500 python3 -m pytest -q -p no:cacheprovider tests/test_images.py tests/test_ahead.py \
      tests/test_graph_steps.py tests/test_eval_point.py tests/test_test_views.py 2>&1 | tee "$OUT/tests.log"
    ;;
  bench)
    [ -n "${2:-}" ] || { echo "usage: $0 bench PART [gpu_train.py options]" >&2; exit 2; }
    part="$2"; shift 2
    setup
    status=0
    python3 benchmarks/gpu_train.py --data-dir .gpudata --only "$part" --record "$@" 2>&1 \
      | tee "$OUT/bench-$part.log" || status=$?
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    exit "$status"
    ;;
  *) echo "usage: $0 prepare | tests | bench PART [options]" >&2; exit 2 ;;
esac
