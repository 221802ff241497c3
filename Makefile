# ddpm-hpc: the same commands on a laptop, a workstation and the cluster's login node.
#   make setup                  create .venv and install everything (torch pinned, see TORCH below)
#   make demo                   train + sample the embedded-digits demo on this machine (CPU is fine)
#   make test                   the test suite (no SLURM, no GPU, no downloads)
#   make local EXP=name [SET="train.steps=500 sample.sampler=ddim"]   train + sample here, in this process
#   make local-sample EXP=name [SET="sample.sampler=ddim sample.steps=50"]   only sample here (latest checkpoint)
#   make list                   the experiments, one line each
#   make data                   download MNIST and CIFAR-10 into $DDPM_HPC_DATA (login node: it has internet)
#   make submit EXP=name [SET=...] [FORCE=1]   train on SLURM (+ a chained sampling job); docs/slurm.md
#   make status [EXP=name]   make logs EXP=name [RANK=r]   make cancel EXP=name   make sample EXP=name [SET=...]
#   make sweep SWEEP=name | EXP=base GRID="train.lr=1e-4,3e-4 ..." [NAME=..] [SEEDS=n] [SET=..]   job arrays; docs/sweeps.md
#   make sweep-local SWEEP=name | EXP=base GRID=... [LIST=1: list the members only]   make status|cancel SWEEP=name
#   make report [EXP=name]   make pull EXP=name|all [CKPT=1]                     docs/results.md
#   make compare EXPS="a b c" [ARGS="--metric fid"]   one page comparing experiments  docs/results.md
#   make eval EXP=name [SET=...] [ARGS="--n 1000"] [LOCAL=1]   make fid-weights     sample quality; docs/results.md
#   make eval-sweep EXP=name GRID="sample.guidance=1,2 sample.steps=4,8" [ARGS=..] [LOCAL=1]   one checkpoint, a grid
#   make classifier EXP=name [ARGS="--steps 1500 --force"]   the classifier eval scores with, for EXP's dataset
#       eval, eval-sweep and classifier submit a SLURM job where sbatch is on PATH (a login node), else run here;
#       LOCAL=1: here
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
	@sed -n '/^$$/q;2,$$p' Makefile  # the comment block above, up to its blank line

$(PY):
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
	@test -n "$(EXP)" || { echo "usage: make local-sample EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"]"; exit 2; }
	$(CLI) sample $(EXP) $(SET)

train:
	@test -n "$(EXP)" || { echo "usage: make train EXP=<name>"; exit 2; }
	$(CLI) train $(EXP) $(SET)

list:
	$(CLI) list

data:
	$(CLI) data

# SLURM (docs/slurm.md): make submit EXP=<name> [SET="k=v ..."] [FORCE=1]   make status [EXP=name]
#   make logs EXP=<name> [RANK=r]   make cancel EXP=<name>   make sample EXP=<name> [SET=...] (a sampling job alone)
#   make test-slurm        the SLURM suite on a throwaway local cluster (tests/slurm/cluster.sh; needs root)
.PHONY: submit status logs cancel sample test-slurm
submit:
	@test -n "$(EXP)" || { echo "usage: make submit EXP=<name> [SET=\"key=value ...\"] [FORCE=1]; see: make list"; exit 2; }
	$(CLI) submit $(EXP) $(SET) $(if $(FORCE),--force)

status:
	@$(CLI) status $(EXP) $(if $(SWEEP),--sweep $(SWEEP))

logs:
	@test -n "$(EXP)" || { echo "usage: make logs EXP=<name>"; exit 2; }
	@$(CLI) logs $(EXP) $(if $(RANK),--rank $(RANK))

cancel:
	@test -n "$(EXP)$(SWEEP)" || { echo "usage: make cancel EXP=<name> | SWEEP=<name>"; exit 2; }
	$(CLI) cancel $(EXP) $(if $(SWEEP),--sweep $(SWEEP))

sample:
	@test -n "$(EXP)" || { echo "usage: make sample EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"]"; exit 2; }
	$(CLI) submit-sample $(EXP) $(SET)

# Sweeps (docs/sweeps.md): many members from one command, each an ordinary experiment <sweep>-<what varies>
SWEEP_USAGE = usage: make $@ SWEEP=<name> (experiments/sweeps/<name>.yaml) | EXP=<base> GRID="key=v1,v2 ..." [NAME=..] [SEEDS=n] [PARALLEL=k] [SET=..]
SWEEP_ARGS = $(SWEEP) $(if $(EXP),--base $(EXP)) $(if $(GRID),--grid '$(GRID)') $(if $(NAME),--name $(NAME)) \
	$(if $(SEEDS),--seeds $(SEEDS)) $(if $(PARALLEL),--parallelism $(PARALLEL)) $(if $(LIST),--list) $(SET)
.PHONY: sweep sweep-local
sweep:
	@test -n "$(SWEEP)$(EXP)" || { echo '$(SWEEP_USAGE)'; exit 2; }
	$(CLI) sweep $(SWEEP_ARGS) $(if $(FORCE),--force)

sweep-local:
	@test -n "$(SWEEP)$(EXP)" || { echo '$(SWEEP_USAGE)'; exit 2; }
	$(CLI) sweep-local $(SWEEP_ARGS)

test-slurm:
	bash tests/slurm/cluster.sh up && $(PY) -m pytest -q -m slurm tests/slurm; \
	rc=$$?; bash tests/slurm/cluster.sh down; exit $$rc

# Results (docs/results.md): make report [EXP=name]   make pull EXP=<name>|all [CKPT=1]  (REMOTE in .env)
.PHONY: pull report compare
pull:
	@bash scripts/pull.sh "$(EXP)" "$(CKPT)"

report:
	$(CLI) report $(or $(EXP),all)

# experiments/_compare/<names>/index.html (ARGS="--out DIR --metric fid|classifier_fd|accuracy|loss|...")
compare:
	@test -n "$(EXPS)" || { echo "usage: make compare EXPS=\"a b c\" [ARGS=\"--metric fid\"]"; exit 2; }
	$(CLI) compare $(EXPS) $(ARGS)

# Sample quality (ddpm_hpc/metrics): make eval EXP=<name> [SET="sample.sampler=ddim sample.steps=50"] [ARGS="--n 1000"]
#   -> experiments/<name>/eval/fresh-<tag>.json (ARGS="--samples <tag>": eval/samples-<tag>.json; --force replaces)
#   make fid-weights   fetch the FID Inception weights (login node: internet)
#   make eval-sweep EXP=<name> GRID="sample.guidance=1,2 sample.steps=4,8" -> eval/sweep-<tag>.json + .png (frontier)
# Both submit a job (ddpm-hpc submit-eval / submit-eval-sweep) where sbatch is on PATH and this is not already a SLURM
# job (a login node forbids computing), else run here (ddpm-hpc eval / eval-sweep); LOCAL=1 always runs here.
.PHONY: eval eval-sweep classifier fid-weights
HERE_OR_JOB = if [ -z "$(LOCAL)" ] && [ -z "$$SLURM_JOB_ID" ] && command -v sbatch >/dev/null 2>&1; then
eval:
	@test -n "$(EXP)" || { echo "usage: make eval EXP=<name> [SET=\"sample.sampler=ddim sample.steps=50\"] [LOCAL=1]"; exit 2; }
	@$(HERE_OR_JOB) $(CLI) submit-eval $(EXP) $(SET) $(ARGS); else $(CLI) eval $(EXP) $(SET) $(ARGS); fi

eval-sweep:
	@test -n "$(EXP)" -a -n "$(GRID)" || { echo "usage: make eval-sweep EXP=<name> GRID=\"sample.guidance=1,2 sample.steps=4,8\" [SET=...] [ARGS=\"--n 500\"] [LOCAL=1]"; exit 2; }
	@$(HERE_OR_JOB) $(CLI) submit-eval-sweep $(EXP) $(SET) --grid $(GRID) $(ARGS); \
	else $(CLI) eval-sweep $(EXP) $(SET) --grid $(GRID) $(ARGS); fi

classifier:
	@test -n "$(EXP)" || { echo "usage: make classifier EXP=<name> [ARGS=\"--steps 1500 --force\"] [LOCAL=1]"; exit 2; }
	@$(HERE_OR_JOB) $(CLI) submit-classifier $(EXP) $(ARGS); else $(CLI) classifier $(EXP) $(ARGS); fi

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
