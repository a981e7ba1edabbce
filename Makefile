# onejourney: `make run` runs the engine on an embedded broker; `make test`
# installs what the tests need (the tansu broker) and runs every test.

CARGO ?= cargo
BROKER_PORT ?= 19092
export BROKER_PORT

.PHONY: run test lint unit e2e build tools deploy-check bench clean

## Build and run the engine on its embedded default (in-process Kafka + simulator).
run:
	$(CARGO) run -p onejourney-demo --bin onejourney-demo

build:
	$(CARGO) build --workspace --all-targets

## Everything CI checks: format, lints, deploy configs and alert rules, unit
## and end-to-end tests on a real broker.
test: lint tools deploy-check
	scripts/with-broker.sh $(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) run -q -p onejourney-xtask -- layout

## Unit and property tests only (no broker).
unit:
	$(CARGO) test -p onejourney-core -p onejourney-engine -p onejourney-simulator -p onejourney-demo

## End-to-end tests only.
e2e: tools
	scripts/with-broker.sh $(CARGO) test -p onejourney-e2e

## Installs tansu, Prometheus and promtool when missing.
tools:
	scripts/tools.sh

## Prometheus config and alert-rule tests.
deploy-check: tools
	promtool check config deploy/prometheus/prometheus.yml
	promtool check config --syntax-only deploy/compose/prometheus.yml
	promtool test rules deploy/prometheus/onejourney.rules.test.yml

## Criterion micro-benchmarks, then every figure of docs/benchmarks.md on a
## fresh tansu broker (release build); BENCH_OUT=path writes them as JSON.
bench: tools
	$(CARGO) bench -p onejourney-bench --bench core -- --warm-up-time 1 --measurement-time 3
	scripts/with-broker.sh sh -c '$(CARGO) run --release -p onejourney-bench --bin onejourney-bench -- --brokers "$$ONEJOURNEY_TEST_BROKERS" $(if $(BENCH_OUT),--out $(BENCH_OUT))'

clean:
	$(CARGO) clean
