# ddp_eval: `make demo` then `make test` on a fresh machine; both (re)use the virtual env in $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .cache/demo
NPROC ?= 2
CONFIG ?= configs/mmbench.yaml
# Local GPUs (one rank each); 1 CPU rank where there is none.
GPUS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | wc -l); [ "$$n" -gt 0 ] && echo $$n || echo 1)

.PHONY: install demo test test-all lint eval slurm test-slurm doctor bench clean

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

# Every test, those marked slow too (pyproject.toml's addopts leaves them out of `make test`).
test-all: install
	$(PY) -m pytest -q -m ""

lint: install
	$(VENV)/bin/ruff check ddp_eval tests

# One process per local GPU: make eval CONFIG=configs/mmbench.yaml
eval: install
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(GPUS) -m ddp_eval --config $(CONFIG)

# One SLURM job over NODES nodes (one torchrun per node), with the venv's python. Resources go in SBATCH_ARGS:
#   make slurm CONFIG=configs/mmbench.yaml NODES=2 SBATCH_ARGS="--gpus-per-node=8 --cpus-per-task=64"
#   make slurm CONFIG=... SBATCH_ARGS="--ntasks-per-node=4 --cpus-per-task=8"      (CPU-only: 4 ranks of 8 CPUs)
# The job's log: ./ddp_eval-<job id>.out; the ranks': logs/<job id>/ (README "SLURM").
NODES ?= 1
SBATCH_ARGS ?=
slurm: install
	if [ "$(NODES)" = 1 ]; then PYTHON=$(abspath $(PY)) sbatch $(SBATCH_ARGS) launch/slurm_single_node.sbatch $(CONFIG); \
	else PYTHON=$(abspath $(PY)) sbatch --nodes=$(NODES) $(SBATCH_ARGS) launch/slurm_multi_node.sbatch $(CONFIG); fi

# The launch scripts alone: shellcheck, fake srun, and a real one-node SLURM on localhost (root, slurm-wlm).
test-slurm: install
	$(PY) -m pytest -q tests/test_launch.py tests/test_slurm_cluster.py

doctor: install
	$(PY) -m ddp_eval doctor --config $(CONFIG)

# Throughput benchmark (needs a CUDA GPU): the issue-6 workload, runner vs the batch-1 loop.
BENCH_OUT ?= /tmp/ddp_eval_bench
bench: install
	$(PY) bench/throughput.py --out $(BENCH_OUT) --rows 512 --baseline-rows 32 --startup-rows 32 \
		--run b16="run.batch_size=16;run.num_workers=10" --json $(BENCH_OUT)/results.json

clean:
	rm -rf outputs $(DEMO_DIR)
