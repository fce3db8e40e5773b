# ddp_eval: `make demo` then `make test` on a fresh machine; both (re)use the virtual env in $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .cache/demo
NPROC ?= 2
CONFIG ?= configs/mmbench.yaml
# Local GPUs (one rank each); 1 CPU rank where there is none.
GPUS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | wc -l); [ "$$n" -gt 0 ] && echo $$n || echo 1)

.PHONY: install demo test lint eval slurm doctor bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot]'
	touch $@

# Build the tiny offline checkpoint + benchmark once, then run the whole pipeline on $(NPROC) CPU ranks.
demo: install
	$(PY) -m ddp_eval.demo --out $(DEMO_DIR)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m ddp_eval --config configs/demo.yaml

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check ddp_eval tests

# One process per local GPU: make eval CONFIG=configs/mmbench.yaml
eval: install
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(GPUS) -m ddp_eval --config $(CONFIG)

# One SLURM job over NODES nodes (one torchrun per node, all GPUs of each): make slurm CONFIG=... NODES=2
NODES ?= 1
slurm:
	mkdir -p logs
	if [ "$(NODES)" = 1 ]; then sbatch launch/slurm_single_node.sbatch $(CONFIG); \
	else sbatch --nodes=$(NODES) launch/slurm_multi_node.sbatch $(CONFIG); fi

doctor: install
	$(PY) -m ddp_eval doctor --config $(CONFIG)

# Throughput benchmark (needs a CUDA GPU): the issue-6 workload, runner vs the batch-1 loop.
BENCH_OUT ?= /tmp/ddp_eval_bench
bench: install
	$(PY) bench/throughput.py --out $(BENCH_OUT) --rows 512 --baseline-rows 32 --startup-rows 32 \
		--run b16="run.batch_size=16;run.num_workers=10" --json $(BENCH_OUT)/results.json

clean:
	rm -rf outputs $(DEMO_DIR)
