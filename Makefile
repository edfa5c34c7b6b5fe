# Tasks: `make lab` (the main job on the built-in lab), `make test`, `make lab-down`, `make engine`,
# `make docs`.
# Each installs what it needs first: Debian packages, the venv, the Pulumi engine.
PY := venv/bin/python
HOSTS ?= 3
# Test files run side by side (most lab tests wait on the provider and on PostgreSQL, not the CPU).
TEST_WORKERS ?= 3
# The plugins' upstream source, for machines where Pulumi's installer cannot be reached.
ENGINE_SRC ?= $(if $(wildcard ../shared/engine-src),$(abspath ../shared/engine-src))
export ENGINE_SRC

.PHONY: lab lab-down test engine packages lint exporters rootfs

packages:
	bash lab/install_packages.sh

venv/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv venv
	venv/bin/pip install -q -r requirements-dev.txt
	venv/bin/pip install -q --no-deps -e .
	touch $@

engine:
	bash lab/bootstrap_engine.sh
	bash lab/install_actionlint.sh

# The pinned upstream exporters (docs/operators/monitoring.md) from the Go module proxy, cached
# outside the clone.
exporters:
	bash lab/build_exporters.sh

# The Debian 13 root file system lab hosts can run (lab/rootfs.py), cached outside the clone.
rootfs: packages
	python3 -m lab.rootfs build

lab: packages venv/.installed engine exporters
	$(PY) -m lab.main --hosts $(HOSTS)

.PHONY: bench
# The benchmark of issue 15 on a lab of its own (mlabb); figures in results/lab_timings.json.
bench: packages venv/.installed engine
	$(PY) -m lab.bench

lab-down:
	python3 -m lab.namespaces down

.PHONY: bench-managed
# Issue 20's figures on a managed stand-in lab of its own (mlmb); results/managed_timings.json.
bench-managed: packages venv/.installed engine
	$(PY) -m lab.bench_managed

.PHONY: bench-switchover
# Issue 22's switchover pause and failover time on a lab of its own (mlsb);
# results/switchover_timings.json.
bench-switchover: packages venv/.installed engine
	$(PY) -m lab.bench_switchover

.PHONY: bench-read-endpoint
# Issue 22's read endpoint figures on a stand-in lab of its own (mlrb);
# results/read_endpoint_timings.json.
bench-read-endpoint: packages venv/.installed engine
	$(PY) -m lab.bench_read_endpoint

.PHONY: bench-upgrade
# Issue 24's blue/green upgrade (15 to 17, ~1 GB) against a dump and restore, on a lab of its
# own (mlub); results/upgrade_timings.json. Needs the Debian 13 image (rootfs, cached).
bench-upgrade: packages venv/.installed engine rootfs
	$(PY) -m lab.bench_upgrade

.PHONY: lab-droplets lab-droplets-down
# Droplets mode on the DigitalOcean stand-in (lab/standin/): a dev-like stack (primary + 2
# replicas) through `pulumi up` with the real DigitalOcean provider; the droplets are lab hosts.
lab-droplets: packages venv/.installed engine
	$(PY) -m lab.standin.lab_droplets up

lab-droplets-down: venv/.installed
	$(PY) -m lab.standin.lab_droplets down

.PHONY: lab-managed lab-managed-down
# Managed mode on the stand-in: a prod-like stack (PostgreSQL with a standby, the pool, a read-only
# node, Valkey, Spaces and the CDN) through pulumi up, then grant, the env and its check from an
# app droplet.
lab-managed: packages venv/.installed engine
	$(PY) -m lab.standin.lab_managed up

lab-managed-down: venv/.installed
	$(PY) -m lab.standin.lab_managed down

.PHONY: docs
# The docs site (mkdocs.yml) in strict mode into build/site/ (ignored): a broken link or anchor,
# or a page missing from the nav, fails. tests/unit/test_docs.py checks the generated pages.
docs: venv/.installed
	venv/bin/mkdocs build --strict

lint: venv/.installed engine
	venv/bin/ruff check .
	venv/bin/ruff format --check .
	.engine/bin/actionlint

test: packages venv/.installed engine exporters rootfs lint docs
	rm -rf build/test-times
	$(PY) -m pytest -q -ra --durations=10 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)
