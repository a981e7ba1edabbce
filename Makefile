# onejourney: `make run` runs the engine on an embedded broker; `make test`
# installs what the tests need (the tansu broker) and runs every test.

CARGO ?= cargo
BROKER_PORT ?= 19092
export BROKER_PORT

.PHONY: run test lint unit e2e build broker-install clean

## Build and run the engine on its embedded default (in-process Kafka + simulator).
run:
	$(CARGO) run -p onejourney-engine --bin onejourney -- demo

build:
	$(CARGO) build --workspace --all-targets

## Everything CI checks: format, lints, unit and end-to-end tests on a real broker.
test: lint broker-install
	scripts/with-broker.sh $(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit and property tests only (no broker).
unit:
	$(CARGO) test -p onejourney-core -p onejourney-engine -p onejourney-simulator

## End-to-end tests only.
e2e: broker-install
	scripts/with-broker.sh $(CARGO) test -p onejourney-e2e

broker-install:
	scripts/broker.sh install

clean:
	$(CARGO) clean
