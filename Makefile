# nexingest — the two commands that do everything on a fresh Debian machine:
#   make demo   run the main job end to end on the fixtures
#   make test   install what is missing, start the local services, run every check and test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := eval "$$(scripts/services.sh env)"

.PHONY: demo test deps services stop lint layers audit unit bench fixtures

deps:
	scripts/deps.sh

services: deps
	scripts/services.sh start

stop:
	scripts/services.sh stop

demo: services
	$(ENV) && scripts/demo.sh

lint: deps
	python3 scripts/layers.py
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/audit.sh

# No import cycle in any crate, no import from a lower layer of the worker to a higher one
# (part of lint; the layers are listed in the script).
layers:
	python3 scripts/layers.py

# Dependencies against the RustSec database in ../shared/advisory-db, offline (part of lint).
audit:
	scripts/audit.sh

unit: services
	$(ENV) && cargo test --workspace --locked

test: lint unit

# Not part of `make test`: benchmarks are measured, not asserted. See README.
bench: deps
	scripts/services.sh start-bench
	$(ENV) && cargo bench -p nexingest-benches

# Regenerates the committed fixture files (deterministic).
fixtures: deps
	cargo run --release -p fixtures --bin gen-fixtures -- fixtures/data
