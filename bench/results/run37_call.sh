#!/usr/bin/env bash
# Run 37: which tiling of the Triton attention computes right on Hopper; then the 4,300 rows with the fastest right one.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc PYTHONUNBUFFERED=1
python3 -c "import ddp_eval.run.runner, ddp_eval.models.qwen2_vl.load, qwen_vl_utils, transformers.models.qwen2_vl.modeling_qwen2_vl, transformers.models.qwen2_vl.processing_qwen2_vl" 2>&1 | tail -2
for c in first64 tma64 pad128 pad128n128 e64 te64 e64m64 te64s2 sep16 tsep16; do
  timeout 60 python3 .dev/dbg_attn.py $c > /tmp/dbg_$c.txt 2>&1
  grep -v Warning /tmp/dbg_$c.txt | grep -v "^RESULT" | tail -2 | cut -c1-300
  grep "^RESULT" /tmp/dbg_$c.txt >> $OUT/run37_cases.jsonl
done
python3 - <<'PY'
import json, os, re
rows = [json.loads(l[7:]) for l in open(os.environ["OUT"] + "/run37_cases.jsonl")]
right = [r for r in rows if r["diff"] < 0.02 and r["case"] not in ("first64",)]
print("right:", [(r["case"], round(r["ms"], 2)) for r in right])
if right:
    best = min(right, key=lambda r: r["ms"])
    p = "ddp_eval/models/common/triton_attention.py"
    s = re.sub(r"^CONFIG = \(.*\)$", f"CONFIG = {tuple(best['config'])}", open(p).read(), flags=re.M)
    open(p, "w").write(s)
    print("CONFIG for the passes:", best)
    open("/tmp/go", "w").write("1")
PY
[ -f /tmp/go ] && python3 bench/end_to_end.py --out /tmp/e2e --pass triton="model.vision_attention=triton" --pass shipped --json $OUT/run37_e2e.json 2>&1 | tee $OUT/run37_e2e.txt | grep -v "^  " | tail -8
