# onejourney: `make run` runs the engine on an embedded broker; `make test`
# installs what the tests need (the tansu broker) and runs every test.

CARGO ?= cargo
BROKER_PORT ?= 19092
export BROKER_PORT
# mimalloc (the allocator of the onejourney and onejourney-bench binaries:
# make bench, and the engine processes the end-to-end tests start) keeps freed
# memory for reuse instead of giving it back after 1 s and faulting it in
# again: the writer 5-25% faster, resident memory 5% higher
# (docs/benchmarks.md, session 36). make run's demo and the test binaries
# keep the system allocator. The Dockerfile and the Kubernetes manifest set
# it too.
MIMALLOC_PURGE_DELAY ?= -1
export MIMALLOC_PURGE_DELAY

.PHONY: run test lint unit e2e build tools deploy-check bench bench-scaleout bench-10m churn-eval clean

## Build and run the engine on its embedded default (in-process Kafka + simulator).
run:
	$(CARGO) run -p onejourney-demo --bin onejourney-demo

build:
	$(CARGO) build --workspace --all-targets

## Everything CI checks: format, lints, deploy configs and alert rules, unit
## and end-to-end tests on a real broker.
## The end-to-end tests keep each run's state directories and engine logs
## under $TMPDIR/onejourney-e2e for diagnosis until the next run clears them.
E2E_DIR = $${TMPDIR:-/tmp}/onejourney-e2e

test: lint tools deploy-check
	rm -rf "$(E2E_DIR)"
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
	rm -rf "$(E2E_DIR)"
	scripts/with-broker.sh $(CARGO) test -p onejourney-e2e

## Installs tansu, Prometheus and promtool when missing.
tools:
	scripts/tools.sh

## Every deploy file through a real validator: Prometheus config and
## alert-rule tests (promtool), Kubernetes objects against the API schemas
## (kubernetes-validate --strict), the compose file (docker-compose config),
## the Dockerfile (hadolint), and the Rust version and image tags they name
## against the workspace and Cargo.lock. (No Docker engine here: the image
## itself is not built.)
deploy-check: tools
	promtool check config deploy/prometheus/prometheus.yml
	promtool check config --syntax-only deploy/compose/prometheus.yml
	promtool test rules deploy/prometheus/onejourney.rules.test.yml
	kubernetes-validate --strict --quiet deploy/kubernetes/onejourney.yaml
	docker-compose -f deploy/compose/docker-compose.yml config --quiet
	hadolint deploy/compose/Dockerfile
	python3 scripts/check-versions.py
	python3 scripts/check-deploy-secrets.py
	python3 scripts/check-deploy-allocator.py

## Criterion micro-benchmarks, then every figure of docs/benchmarks.md on a
## fresh tansu broker (release build); BENCH_OUT=path writes them as JSON.
## BENCH_PROFILES=1000000,10000000 measures the state figures at both sizes
## in one run (10M needs room for two copies of the state: see bench-10m).
BENCH_PROFILES ?= 1000000
bench: tools
	$(CARGO) bench -p onejourney-bench --bench core -- --warm-up-time 1 --measurement-time 3
	scripts/with-broker.sh sh -c '$(CARGO) run --release -p onejourney-bench --bin onejourney-bench -- --brokers "$$ONEJOURNEY_TEST_BROKERS" --profiles $(BENCH_PROFILES) $(if $(BENCH_OUT),--out $(BENCH_OUT))'

## The scaleout figures alone (also part of `make bench`): the engine as 1,
## 2 and 3 instances of one group with the scale-out settings on, one
## instance with them off, and the identity log's ceiling; release build,
## fresh tansu broker. SCALEOUT_EVENTS sets the backlog.
SCALEOUT_EVENTS ?= 50000
bench-scaleout: tools
	scripts/with-broker.sh sh -c '$(CARGO) run --release -p onejourney-bench --bin onejourney-bench -- --brokers "$$ONEJOURNEY_TEST_BROKERS" --scaleout-only --scaleout-events $(SCALEOUT_EVENTS) $(if $(BENCH_OUT),--out $(BENCH_OUT))'

## memory, core and recovery (snapshot write + restore) with 10M profiles
## loaded (no broker; about 22 minutes and 22 GB resident): the other
## figures need a second copy of the state.
bench-10m:
	$(CARGO) run --release -p onejourney-bench --bin onejourney-bench -- --core-only --events 60000 --profiles 10000000 $(if $(BENCH_OUT),--out $(BENCH_OUT))

## The learned churn model against the hand-weighted score, recency alone and
## BG/NBD on the harder simulator (prequential AUCs, JSON; no broker needed).
churn-eval:
	$(CARGO) run --release -p onejourney-bench --bin onejourney-churn-eval

clean:
	$(CARGO) clean
