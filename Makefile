# ddpm-hpc: the same commands on a laptop, a workstation and the cluster's login node.
#   make setup                  create .venv and install everything (torch pinned, see TORCH below)
#   make demo                   train + sample the embedded-digits demo on this machine (CPU is fine)
#   make test                   the test suite (no SLURM, no GPU, no downloads)
#   make local EXP=name [SET="train.steps=500 sample.sampler=ddim"]
#   make data                   download MNIST and CIFAR-10 into $DDPM_HPC_DATA (login node: it has internet)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/ddpm-hpc
# The torch build to install. The default pair is the one tested here; on a CUDA cluster you may prefer e.g.
# TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
EXP    ?=
SET    ?=

.PHONY: setup demo test local train sample data list help

help:
	@sed -n '2,7p' Makefile

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

train:
	@test -n "$(EXP)" || { echo "usage: make train EXP=<name>"; exit 2; }
	$(CLI) train $(EXP) $(SET)

list:
	$(CLI) list

data:
	$(CLI) data
