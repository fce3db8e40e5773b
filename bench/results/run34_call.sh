#!/usr/bin/env bash
# Run 34: the final tree (Triton launch lock, identity key) on the GPU, shipped config, one pass.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl" 2>&1 | tail -2
python3 bench/end_to_end.py --out /tmp/e2e --pass shipped --json $OUT/run34_e2e.json
