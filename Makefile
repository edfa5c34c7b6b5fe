# Tasks: `make lab` (the main job on the built-in lab), `make test`, `make lab-down`, `make engine`.
PY := venv/bin/python
HOSTS ?= 3

.PHONY: lab lab-down test engine lint

venv/.installed: requirements.txt requirements-dev.txt
	python3 -m venv venv
	venv/bin/pip install -q -r requirements-dev.txt
	touch $@

engine:
	bash scripts/bootstrap_engine.sh || true

lab: venv/.installed engine
	$(PY) scripts/lab_main.py --hosts $(HOSTS)

lab-down:
	$(PY) scripts/lab.py down

lint: venv/.installed
	venv/bin/ruff check .
	venv/bin/ruff format --check .
	@test -x .engine/bin/actionlint || { echo "actionlint is missing: run bash scripts/install_actionlint.sh" >&2; exit 1; }
	.engine/bin/actionlint

test: lint
	$(PY) -m pytest -q -ra
