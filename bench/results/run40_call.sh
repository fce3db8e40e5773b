#!/usr/bin/env bash
# Run 40: the Triton kernels compiled ahead, in a thread beside the start-up (new) against the tree before it (base,
# f690067), each cold (its own empty Triton cache) and warm; then the attention kernel at Qwen3-VL's head dim 64.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
nvidia-smi -L; ls ~/.triton/cache 2>/dev/null | wc -l
T0=$(date +%s)
for t in base new; do (cd .dev/$t && python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl") 2>&1 | tail -2; done
E=/tmp/e2e
pass() {  # tree n spec [triton cache for the base tree, whose bench does not set one]
  echo "=== pass $2 ($1) $3 at $(( $(date +%s) - T0 )) s"
  (cd .dev/$1 && env ${4:+TRITON_CACHE_DIR=$4} python3 bench/end_to_end.py --out $E --pass "$3" --json $OUT/run40_${2}_$1.json 2>&1 | grep -v "^  " | tail -3)
  grep -h "compiled ahead\|first batch written\|model loaded\|processor loaded\|rows planned" $OUT/run40_${2}_$1.json | head -6 | cut -c1-200
}
pass new 0 "pagecache=data.limit=64"
pass base 1 "base" /tmp/tc_base
pass new 2 "shipped"
pass new 3 "shipped:warm"
pass base 4 "base:warm" /tmp/tc_base
echo "passes done at $(( $(date +%s) - T0 )) s"
(cd .dev/new && for c in 128,64,4,3,1,0,16 128,128,8,3,0,0,0 128,64,4,3,0,0,16; do timeout 60 python3 bench/attention.py --images 16 --head-dim 64 --one $c 2>&1 | grep -v Warning | grep -v "^RESULT" | tail -2 | cut -c1-250; done)
echo "all done at $(( $(date +%s) - T0 )) s"
