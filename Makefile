# ddpm-hpc: the same commands on a laptop, a workstation and the cluster's login node.
#   make setup                  create .venv and install everything (torch pinned, see TORCH below)
#   make demo                   train + sample the embedded-digits demo on this machine (CPU is fine)
#   make test                   the test suite (no SLURM, no GPU, no downloads)
#   make local EXP=name [SET="train.steps=500 sample.sampler=ddim"]   train + sample here, in this process
#   make local-sample EXP=name [SET="sample.sampler=ddim sample.steps=50"]   only sample here (latest checkpoint)
#   make list                   the experiments, one line each
#   make data                   download MNIST and CIFAR-10 into $DDPM_HPC_DATA (login node: it has internet)
#   make submit EXP=name [SET=...] [FORCE=1] [DRY=1]   train on SLURM (+ chained sampling); DRY=1: print only
#   make status [EXP=name]   make logs EXP=name [RANK=r]   make cancel EXP=name   make sample EXP=name [SET=...]
#   make report [EXP=name]   make pull EXP=name|all [CKPT=1]                     docs/results.md
#   make eval EXP=name [SET=...] [ARGS="--n 1000"]   make fid-weights             sample-quality metrics
#   make bench [ARGS=...]   make gpu-check (on a GPU node: GPU tests + CUDA benchmark)   docs/performance.md
#   make test-slurm             the SLURM suite on a throwaway local cluster (needs root)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/ddpm-hpc
# The torch build to install. The default pair is the one tested here; on a CUDA cluster you may prefer e.g.
# TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
EXP    ?=
SET    ?=

.PHONY: setup demo test local local-sample train sample data list help

help:
	@sed -n '2,15p' Makefile

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { echo "error: ddpm-hpc needs \
	Python >= 3.10; $(PYTHON) is $$($(PYTHON) --version 2>&1 | head -1): use make setup PYTHON=python3.11 (or newer)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

setup: $(PY)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e '.[test]'

demo:
	$(CLI) train demo $(SET)
	$(CLI) sample demo $(SET)
	@echo "open experiments/demo/samples/*.png and experiments/demo/loss.png"

test:
	$(PY) -m pytest -q

local:
	@test -n "$(EXP)" || { echo "usage: make local EXP=<name> [SET=\"key=value ...\"]; see: make list"; exit 2; }
	$(CLI) train $(EXP) $(SET)
	$(CLI) sample $(EXP) $(SET)

local-sample:
	@test -n "$(EXP)" || { echo "usage: make local-sample EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"] [DRY=1]"; exit 2; }
	$(CLI) sample $(EXP) $(SET)

train:
	@test -n "$(EXP)" || { echo "usage: make train EXP=<name>"; exit 2; }
	$(CLI) train $(EXP) $(SET)

list:
	$(CLI) list

data:
	$(CLI) data

# SLURM (docs/slurm.md): make submit EXP=<name> [SET="k=v ..."] [FORCE=1] [DRY=1]   make status [EXP=name]
#   make logs EXP=<name> [RANK=r]   make cancel EXP=<name>   make sample EXP=<name> [SET=...] [DRY=1] (sampling alone)
#   DRY=1: print the sbatch scripts that would be submitted, submit nothing
#   make test-slurm        the SLURM suite on a throwaway local cluster (tests/slurm/cluster.sh; needs root)
.PHONY: submit status logs cancel sample test-slurm
submit:
	@test -n "$(EXP)" || { echo "usage: make submit EXP=<name> [SET=\"key=value ...\"] [FORCE=1] [DRY=1]; see: make list"; exit 2; }
	$(CLI) submit $(EXP) $(SET) $(if $(FORCE),--force) $(if $(DRY),--dry-run)

status:
	@$(CLI) status $(EXP)

logs:
	@test -n "$(EXP)" || { echo "usage: make logs EXP=<name>"; exit 2; }
	@$(CLI) logs $(EXP) $(if $(RANK),--rank $(RANK))

cancel:
	@test -n "$(EXP)" || { echo "usage: make cancel EXP=<name>"; exit 2; }
	$(CLI) cancel $(EXP)

sample:
	@test -n "$(EXP)" || { echo "usage: make sample EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"] [DRY=1]"; exit 2; }
	$(CLI) submit-sample $(EXP) $(SET) $(if $(DRY),--dry-run)

test-slurm:
	bash tests/slurm/cluster.sh up && $(PY) -m pytest -q -m slurm tests/slurm; \
	rc=$$?; bash tests/slurm/cluster.sh down; exit $$rc

# Results (docs/results.md): make report [EXP=name]   make pull EXP=<name>|all [CKPT=1]  (REMOTE in .env)
.PHONY: pull report
pull:
	@bash scripts/pull.sh "$(EXP)" "$(CKPT)"

report:
	$(CLI) report $(or $(EXP),all)

# Sample quality (ddpm_hpc/metrics): make eval EXP=<name> [SET="sample.sampler=ddim sample.steps=50"] [ARGS="--n 1000"]
#   -> experiments/<name>/eval/fresh-<tag>.json (ARGS="--samples <tag>": eval/samples-<tag>.json; --force replaces)
#   make fid-weights   fetch the FID Inception weights (login node: internet)
.PHONY: eval fid-weights
eval:
	@test -n "$(EXP)" || { echo "usage: make eval EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"] [DRY=1]"; exit 2; }
	$(CLI) eval $(EXP) $(SET) $(ARGS)

fid-weights:
	$(PY) -m pip install -e '.[fid]'
	$(PY) -m ddpm_hpc.metrics.fid fetch

# Speed (docs/performance.md): make bench [ARGS="--quick | --loss-steps 2500 --loss-fast compile+fused | --json"]
#   the practical's loop vs this trainer side by side, sampling and checkpoint cost -> benchmarks/results/*.json
.PHONY: bench gpu-check
bench:
	$(PY) benchmarks/bench.py $(ARGS)

# On a GPU node: tests/test_gpu.py on cuda, then the CUDA benchmark; logs and JSON -> benchmarks/results/
gpu-check:
	PYTHON=$(PY) bash benchmarks/gpu_check.sh
