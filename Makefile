# infergate developer entry points. Every target that builds or runs first calls
# scripts/setup.sh (idempotent: Debian packages, ONNX Runtime, test venv).
#
#   make run               build release and serve $(RUN_CONFIG) on the console
#   make test              build all binaries, then run every test (nextest if installed)
#   make lint              rustfmt check + clippy with warnings as errors + import circles
#                          + cargo deny (licenses, bans, sources)
#   make fuzz              every fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each
#   make bench-embeddings  infergate vs nginx floor on POST /v1/embeddings
#   make setup             only the set-up

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
RUN_CONFIG ?= examples/embedded.toml
RUN_API_KEY ?= sk-infergate-dev

# .cargo/config.toml sets this for processes cargo starts; binaries started
# directly (make run, the benchmark) need it from here. A value already in the
# environment wins.
export ORT_DYLIB_PATH ?= $(CURDIR)/.ort/lib/libonnxruntime.so

.PHONY: setup run test lint fuzz bench-embeddings

setup:
	scripts/setup.sh

run: setup
	$(CARGO) build --release --bin infergate
	@scripts/run-example.sh '$(RUN_CONFIG)' '$(RUN_API_KEY)'
	exec target/release/infergate serve --config '$(RUN_CONFIG)'

test:
	@start=$$EPOCHREALTIME; status=0; \
	scripts/setup.sh; \
	mkdir -p target && df -h target | awk 'NR == 2 { print "make test: " $$4 " free on the disk of target/" }'; \
	$(CARGO) build --workspace --bins || status=$$?; \
	if [[ $$status -eq 0 ]]; then \
	    if $(CARGO) nextest --version >/dev/null 2>&1; then \
	        $(CARGO) nextest run --workspace --no-fail-fast || status=$$?; \
	    else \
	        echo "cargo-nextest not installed: using cargo test"; \
	        $(CARGO) test --workspace --no-fail-fast || status=$$?; \
	    fi; \
	fi; \
	scripts/check-import-cycles.py || status=$$?; \
	awk -v a=$$start -v b=$$EPOCHREALTIME -v s=$$status \
	    'BEGIN { printf "make test: %s after %.1f s (setup + build + tests)\n", (s ? "FAILED" : "passed"), b - a }'; \
	exit $$status

lint:
	scripts/setup.sh --lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-import-cycles.py
	.tools/cargo-deny --log-level error check licenses bans sources

# Coverage-guided fuzzing (cargo-fuzz on nightly, AddressSanitizer): each
# target in turn for FUZZ_SECONDS from the seeds in fuzz/corpus/; fails on a
# crash (fuzz/README.md).
FUZZ_SECONDS ?= 60
fuzz:
	scripts/setup.sh --fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# A profile-guided build for serving: target/pgo/infergate, trained on the
# proxy, chat, embeddings and translation paths (~15 min on 2 cores;
# BENCHMARKS.md, "Profile-guided optimisation").
.PHONY: release-pgo
release-pgo:
	scripts/setup.sh --bench
	scripts/build-pgo.sh

bench-embeddings:
	scripts/setup.sh --bench
	$(CARGO) build --release --bin infergate
	scripts/bench-embeddings.sh

# Real model on ONNX Runtime: batching vs. batch size 1 through the gateway,
# then the backend vs. Python onnxruntime (BENCHMARKS.md).
.PHONY: bench-onnx
bench-onnx:
	scripts/setup.sh --bench
	$(CARGO) build --release --bin infergate
	scripts/bench-onnx-gateway.sh
	scripts/bench-onnx-backend.sh
