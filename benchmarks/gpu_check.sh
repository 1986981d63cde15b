#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/gpu_check.py and benchmarks/README.md).
#
#   benchmarks/gpu_check.sh            # on a machine with a GPU: ~8 minutes on one H200
#   benchmarks/gpu_check.sh --dry-run  # the same code on a tiny model on the CPU (CI)
#   benchmarks/gpu_check.sh --download-wheels  # on a networked machine: fill ./.whl
#
# Writes $OUT/gpu_check.json when OUT is set. Python packages the device image lacks (trl,
# lm-eval, datasets, evaluate, pydantic, ...) are installed from wheels in ./.whl (ignored by
# git) when that folder exists; benchmarks/README.md says how to download them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

# What the device image (torch, transformers, accelerate, peft) lacks, pinned to the versions
# the test suite runs with; no dependencies are resolved (torch would come along).
WHEELS="trl==1.16.0 lm-eval==0.4.13 datasets==5.2.0 evaluate==0.4.6 pyarrow==26.0.1
  pandas==3.1.1 python-dateutil==2.9.0.post0 six==1.17.0 dill==0.4.1 multiprocess==0.70.19
  xxhash==4.1.0 sacrebleu==2.6.0 portalocker==4.4.2 tabulate==0.9.0 colorama==0.4.6
  pytablewriter==1.2.1 dataproperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1
  tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1 more-itertools==11.2.1
  math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pluggy==1.7.0 click==8.5.1 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0"
# Published as source only: built into (pure Python) wheels here.
SOURCE_ONLY="sqlitedict==2.1.0 word2number==1.1"

if [ "${1:-}" = "--download-wheels" ]; then
  mkdir -p .whl
  # shellcheck disable=SC2086
  "$PYTHON" -m pip download -q --dest .whl --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 $WHEELS
  # shellcheck disable=SC2086
  "$PYTHON" -m pip wheel -q --no-deps --wheel-dir .whl $SOURCE_ONLY
  du -sh .whl
  exit 0
fi

if [ -d .whl ] && ! "$PYTHON" -c "import trl, lm_eval, datasets, pydantic" 2>/dev/null; then
  # Offline, from the wheels in .whl only; what the image has already is kept.
  "$PYTHON" -m pip install -q --no-index --no-deps --find-links .whl .whl/*.whl
fi
if ! "$PYTHON" -c "import srlm_harness_plugins" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
