# walrust. `make test` is the one command that runs every test; `make demo` shows walrust
# working on a local-directory replica, `make demo-watch` the sidecar (`walrust watch`) doing
# the same for a plain sqlite3 shell. See README.md.

SHELL := /bin/bash
CARGO ?= cargo
SQLITE3 ?= /usr/bin/sqlite3
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
SUFFIX := $(if $(filter Darwin,$(shell uname -s)),dylib,so)
EXT := $(TARGET_DIR)/release/libwalrust.$(SUFFIX)
# The same extension with the failpoints feature (src/failpoint.rs), for the crash tests.
FAILPOINT_EXT := $(TARGET_DIR)/failpoints/release/libwalrust.$(SUFFIX)

.PHONY: all build build-failpoints test test-env test-unit test-sql test-py test-rusqlite test-sqlite-wal demo demo-watch wheel fmt lint bench clean

all: build

build:
	$(CARGO) build --release

build-failpoints:
	$(CARGO) build --release --features failpoints --target-dir $(TARGET_DIR)/failpoints

# Everything: build, install what is missing (idempotent, quick when all is there), then
# cargo test, the SQL golden tests, pytest, the rusqlite client and SQLite's own WAL tests,
# with a summary.
test: build build-failpoints test-env
	WALRUST_EXT=$(EXT) WALRUST_FAILPOINT_EXT=$(FAILPOINT_EXT) scripts/test.sh

test-env:
	scripts/setup-test-env.sh

# One suite at a time (after `make test-env` once). ARGS go to its runner, e.g.
# make test-py ARGS='-k pitr -x'
test-unit:
	scripts/test.sh unit $(ARGS)
test-sql: build
	WALRUST_EXT=$(EXT) scripts/test.sh sql $(ARGS)
test-py: build build-failpoints
	WALRUST_EXT=$(EXT) WALRUST_FAILPOINT_EXT=$(FAILPOINT_EXT) scripts/test.sh py $(ARGS)
test-rusqlite: build
	WALRUST_EXT=$(EXT) scripts/test.sh rusqlite $(ARGS)
# SQLite's own WAL tests (its testfixture, built from Debian's source of the system's SQLite)
# with walrust loaded and replicating: tests/sqlite-wal/run.sh, part of `make test`.
# FILES='wal.test' runs only the files named.
test-sqlite-wal: build
	scripts/setup-test-env.sh --sqlite-src
	WALRUST_EXT=$(EXT) tests/sqlite-wal/run.sh $(FILES)

demo: build
	WALRUST_EXT=$(EXT) SQLITE3=$(SQLITE3) scripts/demo.sh

# `walrust watch` beside a plain sqlite3 shell (no extension), then SIGTERM and restore.
demo-watch: build
	WALRUST_CLI=$(TARGET_DIR)/release/walrust SQLITE3=$(SQLITE3) scripts/demo-watch.sh

# The Python package sqlite-walrust (dist/sqlite_walrust-VERSION-py3-none-PLATFORM.whl): the
# extension, the walrust command, and sqlite_walrust.load(conn) / loadable_path().
wheel: build
	python3 python/build_wheel.py --ext $(EXT) --cli $(TARGET_DIR)/release/walrust --out dist

fmt:
	$(CARGO) fmt
	$(CARGO) fmt --manifest-path tests/rusqlite-client/Cargo.toml

lint:
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path tests/rusqlite-client/Cargo.toml
	$(CARGO) clippy --all-targets -- -D warnings

# The benchmark (BENCHMARKS.md, bench/plots/): about 27 minutes, 10 of them the "many"
# section (bench/many.py; MANY_DBS_FULL=1 adds N = 1,000, MANY_ROWS picks its rows: grid,
# restore, hung, idle); BENCH_QUICK=1 for a 3-minute
# smoke run. Needs the test environment (scripts/setup-test-env.sh); bench/setup.sh adds
# matplotlib to .venv. See bench/run.py for the BENCH_* sizes.
bench: build
	bench/setup.sh
	.venv/bin/python bench/run.py --ext $(EXT) --cli $(TARGET_DIR)/release/walrust $(ARGS)
	$(CARGO) run --release --example manifest_upkeep -- 30

clean:
	$(CARGO) clean
