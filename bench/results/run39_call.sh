#!/usr/bin/env bash
# Run 39: the new defaults (vision_attention auto = the Triton kernel on Hopper) from the command line, Triton's cache
# cold then warm, against varlen_attn; more tilings of the kernel; the 512 distinct images with both kernels.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
ls ~/.triton/cache 2>/dev/null | wc -l
python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl" 2>&1 | tail -2
python3 bench/end_to_end.py --out /tmp/e2e --pass shipped --pass shipped:warm --pass varlen="model.vision_attention=varlen" --json $OUT/run39_e2e.json 2>&1 | tee $OUT/run39_e2e.txt | grep -v "^  " | tail -8
grep -h "vision attention\|first batch written\|parity:\|Triton" $OUT/run39_e2e.txt | head -12
echo "e2e done at $SECONDS s"
python3 - <<'PY'
import pandas as pd
def read(n): return pd.read_csv(f"/tmp/e2e/runs/{n}/predictions.tsv", sep="\t", keep_default_na=False, dtype=str).set_index("index")
a, b, c = read("shipped"), read("shipped_warm"), read("varlen")
print(f"predictions equal: shipped vs varlen {int((a['prediction'] == c.loc[a.index, 'prediction']).sum())} of {len(a)}, "
      f"shipped vs shipped:warm {int((a['prediction'] == b.loc[a.index, 'prediction']).sum())}")
PY
for c in 128,64,4,3,1,0,16 128,64,4,4,1,0,16 128,64,4,5,1,0,16 128,32,4,3,1,0,16 64,64,4,3,1,0,16 64,128,4,3,1,0,16 256,64,8,3,1,0,16 128,128,4,3,1,0,16 128,64,8,3,1,0,16; do
  timeout 60 python3 bench/attention.py --images 16 --one $c > /tmp/one.txt 2>&1; echo "exit $?" >> /tmp/one.txt
  grep -v Warning /tmp/one.txt | grep -v "^RESULT" | tail -3 | cut -c1-300
  grep "^RESULT" /tmp/one.txt | cut -c8- >> $OUT/run39_attention.jsonl
done
echo "sweep done at $SECONDS s"
left=$((590 - SECONDS)); echo "512 distinct with ${left} s left"
[ $left -gt 60 ] && timeout $left python3 bench/throughput.py --out /tmp/e2e --rows 512 --baseline-rows 0 --run defaults= --run varlen="model.vision_attention=varlen" --compare defaults:varlen --json $OUT/run39_distinct.json 2>&1 | grep -v Warning | grep -v "^ " | tail -8
