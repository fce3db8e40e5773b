#!/usr/bin/env bash
# Run 32: the parity thread with Python's 5 ms switch interval (base: 5acbd46) and with 0.5 ms (new), and the
# parity rows after the batches (new, run.parity_alongside=false), alternating, warm caches.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
nvidia-smi -L
T0=$(date +%s)
for t in base new; do (cd .dev/$t && python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl") 2>&1 | tail -2; done
E=/tmp/e2e
pass() {  # tree n spec
  echo "=== pass $2 ($1) $3 at $(( $(date +%s) - T0 )) s"
  (cd .dev/$1 && python3 bench/end_to_end.py --out $E --pass "$3" --json $OUT/run32_${2}_$1.json)
}
pass new 0 "warmup=data.limit=256"
pass new 1 "al:warm"
pass new 2 "seq:warm=run.parity_alongside=false"
pass base 3 "al5ms:warm"
pass new 4 "al:warm"
pass new 5 "seq:warm=run.parity_alongside=false"
pass base 6 "al5ms:warm"
echo "all done at $(( $(date +%s) - T0 )) s"
