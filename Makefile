# warden: two commands do everything (see README.md).
#   make demo   fetch the pinned Firecracker/jailer, build the test guest and warden, boot one
#               jailed microVM and print its isolation report
#   make test   the whole test suite, including the tests that boot real jailed VMs
.PHONY: assets build demo test lint

assets:
	./scripts/setup-assets.sh

build:
	cargo build --workspace

demo: assets build
	./target/debug/warden demo

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: assets build lint
	cargo nextest run --workspace --no-fail-fast
	cargo test --workspace --doc
