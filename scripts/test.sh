#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against real registries that the
# tests start themselves on loopback ports (docker-registry, skopeo and, for the Azure tests,
# Azurite must be installed: .ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --locked "$@"
