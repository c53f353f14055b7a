# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing
# and install the package with every extra (highway-env, Meta-World, mo-gymnasium, Ray, Stable-Baselines3), so
# that every family runs, the Ray executor is tested and `bench ppo` has its reference.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SDL_VIDEODRIVER ?= dummy
export MUJOCO_GL ?= egl
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,all,bench]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/policygradex run --family cartpole --out runs/demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
