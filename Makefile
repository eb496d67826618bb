# The two commands of the README: `make demo` and `make test`. Everything
# they need is installed and started from here (nothing by hand).
SHELL := /bin/bash
PY := .venv/bin/python
MANAGE := $(PY) manage.py
WEB_PORT ?= 8000
REPEAT ?= 3

.PHONY: bootstrap system venv build node bytecode services services-stop services-status migrate admin demo test chaos bench check clean-var

bootstrap: system venv build node bytecode services

system:
	@scripts/bootstrap-system.sh

# uv (Astral's installer, pinned) installs the lock: the same pinned packages as pip, in a fraction of
# its time on a fresh clone, which `make test` spends inside its 15 minutes. It compiles the bytecode as
# pip does: where Python may not write it (PYTHONDONTWRITEBYTECODE), every process would compile what it
# imports again, and start far more slowly. Where uv can't be had or can't install (it reads no pip.conf:
# a mirror set there), pip installs the lock as before.
UV_VERSION := 0.13.9
PIP := $(PY) -m pip install -q --disable-pip-version-check
venv: .venv/.installed
.venv/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	@.venv/bin/uv --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " || $(PIP) uv==$(UV_VERSION) || true
	@if test -x .venv/bin/uv && .venv/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.txt; then :; \
	else echo "venv: installing requirements.txt with pip"; $(PIP) -r requirements.txt; fi
	@touch $@

# The window book compiled (edge_app/compiled.py): Cython turns edge_app/windows.py, with the C types of
# windows.pxd, into an extension module beside it, which Python imports instead; the stamp names what it was
# compiled from, so a book changed since is compiled again here and refused by the nodes until it is.
build: venv
	@$(PY) -m edge_app.compiled

# The project's own modules compiled once, as uv compiles the packages': where Python may not write bytecode
# (PYTHONDONTWRITEBYTECODE), every process the tests and the demo start would compile each module of ours it
# imports again. Python still reads what is here, and a file changed since is compiled afresh, in memory, as before.
bytecode: venv
	@$(PY) -m compileall -q -j 0 manage.py fogsite edge_app cloud_app fogwire simulation tooling tests

node: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

services: system venv
	@$(MANAGE) services up

services-stop: venv
	@$(MANAGE) services down

services-status: venv
	@$(MANAGE) services status

migrate: venv
	@$(MANAGE) migrate --noinput -v 0

check: venv
	.venv/bin/ruff check .
	$(MANAGE) check

# A local admin for /admin/ with a generated password, printed once (never a fixed one).
admin: venv migrate
	@$(MANAGE) localadmin

demo: bootstrap migrate
	@echo
	@echo "  Dashboard:  http://127.0.0.1:$(WEB_PORT)/    (admin: /admin/; a user for it: make admin)"
	@echo "  Ctrl-C stops the pipeline; 'make services-stop' stops Kafka and Redis."
	@echo
	WEB_PORT=$(WEB_PORT) .venv/bin/honcho start -f Procfile

# The whole suite on SQLite, in two pytest sessions at once (scripts/alongside.sh): in front, the tests that time
# the machine (marker serial), one at a time; behind them, at the lowest priority (nice 19), the other tests on
# TEST_WORKERS workers (pytest-xdist, a test file at a time, the longest first; tests/parallel.py keeps the
# process hygiene), more workers than cores, as many wait on windows that close at wall-clock time. The serial
# tests mostly wait on the clock, and the others take what they leave (though a process those start in a
# session of its own runs at the normal weight, under the kernel's autogroup). One after the other, the two
# took the sum of their times, and the suite was CPU-bound only while the parallel pass ran. Each session picks
# its harness ports from a share of its own (FOG_TEST_PORT_SHARE, tooling/net.py).
# Then the edge's database tests (marker edge_db) once more, on a PostgreSQL 15 that each worker of that pass
# starts and stops itself, with the machine to themselves: behind the serial tests beside the parallel pass,
# each of its workers got a fifth of what was left, and a test's wait ran out.
TEST_WORKERS ?= 3
# pytest keeps each test module it rewrote for its asserts only where Python may write bytecode: with
# PYTHONDONTWRITEBYTECODE set, every worker and every nested session of the suite rewrote and compiled all of
# them again (seconds of CPU each). Empty, it is unset for Python; the cache lands in the ignored __pycache__.
test: export PYTHONDONTWRITEBYTECODE :=
test: bootstrap
	scripts/alongside.sh var/log/test-parallel.log \
	  env FOG_TEST_PORT_SHARE=1/2 nice -n 19 .venv/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  -m "not serial" \
	  -- env FOG_TEST_PORT_SHARE=0/2 .venv/bin/pytest -m serial
	.venv/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder --edge-database postgres -m edge_db

# Every benchmark at its default size beside its baseline; writes docs/BENCHMARKS.md.
bench: bootstrap
	$(MANAGE) bench all --write docs/BENCHMARKS.md

# The fault matrix, every scenario REPEAT times (default 3); writes docs/RELIABILITY.md.
chaos: bootstrap
	$(MANAGE) chaos --repeat $(REPEAT) --write docs/RELIABILITY.md

clean-var: services-stop
	rm -rf var
