# Two commands do all the set-up on a fresh machine:
#   make demo   - install, render a 4K new scene from the bundled photo with the model that ships
#                 (local Ray), and write demo-out/seeds.png: the photo beside three seeds' new scenes
#   make test   - install, run the default test suite (CPU; goal 5 min on 2 idle cores; measured: README "Tests")
# and, opt-in, what CI runs after it:
#   make test-slow - the tests marked slow or cluster (larger sizes, Ray jobs, multi-node faults; CPU, not gpu)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU build of PyTorch: pinned so that pip never resolves a multi-GB CUDA build on a CPU machine.
# Elsewhere pass e.g. TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup test test-slow lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile ourgan_dist/view/static/package.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"  # its build step (setup.py) fetches OpenSeadragon for `view` with npm
	touch $@

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check ourgan_dist tests benchmarks setup.py
	$(VENV)/bin/ruff format --check ourgan_dist tests benchmarks setup.py

test-slow: setup
	$(PY) -m pytest -q -m "(slow or cluster) and not gpu"

demo: setup
	$(VENV)/bin/ourgan-dist demo --out demo-out

bench: setup
	$(PY) benchmarks/tiled_vs_untiled.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
