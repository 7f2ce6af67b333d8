#!/usr/bin/env bash
# On the GPU machine, from the repository root, after onnxruntime-gpu was staged into
# /tmp/site (../shared/gpu/README.md): install the wheels gpu_prepare.py carried (fcnx
# itself, keras, namex, optree) next to it, then run the check. Extra arguments go to
# gpu_check.py, e.g. --out "$OUT" --budget 280.
set -euo pipefail
files="${1:-.gpu/check}"
shift || true
python3 -m pip install -q --no-deps --no-index --target /tmp/site "$files"/wheels/*.whl
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import onnxruntime as o, fcnx.runtime as f; print("onnxruntime", o.__version__, o.get_available_providers(), "fcnx from", f.__file__)'
exec python3 benchmarks/gpu_check.py --files "$files" "$@"
