# Portcullis: the two commands are `make demo` (the whole pipeline, locally) and `make test` (everything CI runs).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all demo test tools lint doc unit infra-check package bench fuzz soak soak-handler soak-agent clean dist dist-native test-cross deb test-deb image test-image

all: test

## Install test tools (Azurite into .tools/, nftables/ipset from Debian when root). Idempotent.
tools:
	@bash scripts/tools.sh

## Run the whole pipeline locally: Azurite, the handler, the agent, a sample incident, a real block.
demo: tools
	@bash scripts/demo.sh

## Everything CI runs: formatting, lints, docs, all tests (Azurite and network namespaces), infra validation.
test: tools lint doc unit infra-check

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --document-private-items --locked

# PORTCULLIS_TEST_REQUIRE_ALL: a test whose environment is missing (root, Azurite) fails here instead of
# printing SKIPPED, as it does under a plain `cargo test`.
unit:
	$(CARGO) build --workspace --bins --locked
	PORTCULLIS_TEST_REQUIRE_ALL=1 $(CARGO) test --workspace --locked

infra-check:
	@if [ -f infra/validate.sh ]; then bash infra/validate.sh; else echo "infra: nothing to validate yet"; fi

## Build the Functions app zip (static musl handler + host.json + function folders) into dist/.
package:
	@bash scripts/package.sh

## Static agent binaries for x86_64 and aarch64 (musl, cargo-zigbuild) into dist/agent/, with SHA256SUMS (armv7: see scripts/dist.sh).
dist:
	@bash scripts/dist.sh

## Agent unit tests and a smoke run (check, block/list/unblock via the socket) for aarch64 under qemu.
test-cross: dist tools
	@bash scripts/test-cross.sh

## The x86_64 static agent only (what deb, image and package need on this machine).
dist-native:
	@DIST_TARGETS=x86_64-unknown-linux-musl bash scripts/dist.sh

## Debian packages of the agent (cargo-deb) into dist/deb/, for every binary dist/agent/ holds (x86_64 at least).
deb: dist-native
	@bash scripts/deb.sh build

## Install the .deb here, verify its unit, files and permissions, remove it (root).
test-deb: deb
	@bash scripts/deb.sh test

## OCI image of the agent (Debian-package rootfs + static binary, buildah), run with podman (root).
image: dist-native
	@bash scripts/image.sh build

test-image: image
	@bash scripts/image.sh test

## Benchmarks (see BENCHMARKS.md); not part of `make test`.
bench: tools
	@bash scripts/bench-handler.sh
	@bash scripts/bench-agent.sh

## Coverage-guided fuzzing (libFuzzer, stable toolchain; see scripts/fuzz.sh): every target for
## FUZZ_SECONDS (default 60) each; fails on any crash. Not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

## Fault soak (not part of `make test`; results in BENCHMARKS.md): both parts below.
soak: soak-handler soak-agent

## Handler part (examples/soak_handler.rs): the release handler against Azurite at SOAK_RATE requests/s
## (default 1000) for SOAK_SECONDS (default 300); fails on any error or RSS growth.
soak-handler: tools
	$(CARGO) build --release --locked -p portcullis --bin portcullis-handler --example soak_handler
	target/release/examples/soak_handler

## Agent part (local-agent/examples/soak_agent.rs, root): SOAK_MESSAGES (10000) signed block/unblock messages
## out of order, the agent killed -9 SOAK_KILLS (100) times, Azurite stopped once, the firewall failing once;
## fails unless the nftables set equals what the messages' issue times say and nothing was poisoned. Debug
## build: the firewall-outage switch exists in debug builds only.
soak-agent: tools
	$(CARGO) build --locked -p portcullis-agent --bin portcullis-agent --example soak_agent
	target/debug/examples/soak_agent

clean:
	$(CARGO) clean
	rm -rf dist .demo
