#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against real registries that the
# tests start themselves on loopback ports. What they need (docker-registry, skopeo, xmllint, and Azurite
# for the Azure tests) is installed first when missing (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec cargo test --locked "$@"
