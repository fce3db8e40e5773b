#!/usr/bin/env bash
# Run 31: base (7fabda0: parity after the batches, interpreter teardown) against HEAD (fast exit, parity alongside).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
T0=$(date +%s)
python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl" 2>&1 | tail -2
(cd .dev/base && python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load") 2>&1 | tail -2
echo "bytecode written in $(( $(date +%s) - T0 )) s"
E=/tmp/e2e
pass() {  # tree name spec
  local tree=$1 n=$2 spec=$3
  echo "=== pass $n ($tree) $spec at $(( $(date +%s) - T0 )) s"
  if [ "$tree" = base ]; then (cd .dev/base && python3 bench/end_to_end.py --out $E --pass "$spec" --json $OUT/run31_${n}_base.json)
  else python3 bench/end_to_end.py --out $E --pass "$spec" --json $OUT/run31_${n}_new.json; fi
}
pass new 1 shipped
pass base 2 shipped:warm
pass new 3 shipped:warm
pass new 4 "seq:warm=run.parity_alongside=false"
pass base 5 shipped:warm
pass new 6 "p32:warm=run.parity_rows=32"
echo "all done at $(( $(date +%s) - T0 )) s"
