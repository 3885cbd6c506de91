#!/usr/bin/env bash
# The main job on a local default: two real registries on loopback standing in for MCR and
# your ACR, an AKS-shaped image set seeded into the "MCR", then `mirror plan`, `mirror sync`
# (twice: the second run finds nothing to do) and `mirror verify`.
#
#   scripts/demo.sh            # needs docker-registry (Debian package); .ci/run installs it
#   SCALE=0.2 scripts/demo.sh  # a bigger image set (1.0 = real AKS sizes, ~6 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null || { echo "docker-registry is not installed: apt-get install docker-registry (or run .ci/run)" >&2; exit 1; }

SCALE=${SCALE:-0.02}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # name port
  mkdir -p "$work/$1"
  cat >"$work/$1/config.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/$1/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$2}
YAML
  docker-registry serve "$work/$1/config.yml" >"$work/$1/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$2/v2/" >/dev/null && return; sleep 0.1; done
  echo "registry $1 did not start: $(cat "$work/$1/log")" >&2; exit 1
}

mcr_port=$(free_port); acr_port=$(free_port)
start_registry mcr "$mcr_port"
start_registry acr "$acr_port"
echo "== MCR stand-in on 127.0.0.1:$mcr_port, ACR stand-in on 127.0.0.1:$acr_port"

cargo build --release --quiet --bin mirror --example seed
target=${CARGO_TARGET_DIR:-target}/release
"$target/examples/seed" --registry "http://127.0.0.1:$mcr_port" --scale "$SCALE" >"$work/images.txt"

cat >"$work/mirror.yaml" <<YAML
# Production names stay in the config; the endpoints point them at the local stand-ins.
registries:
  - host: mcr.microsoft.com
    endpoint: http://127.0.0.1:$mcr_port
  - host: myacr.azurecr.io
    endpoint: http://127.0.0.1:$acr_port
target: myacr.azurecr.io
platforms: [linux/amd64, linux/arm64]
# A real ACR serves mcr.microsoft.com through its aks-managed-mcr cache rule (mode: warm);
# the local stand-in has no cache rule, so this demo copies instead.
mappings:
  - source: mcr.microsoft.com
    target: aks-managed-repository
    mode: copy
images:
$(awk '{print "  - " $1}' "$work/images.txt")
YAML

mirror() { "$target/mirror" -c "$work/mirror.yaml" "$@"; }
echo "== mirror plan"; mirror plan || true
echo "== mirror sync"; mirror sync --report-json "$work/report.json"
echo "== mirror sync (again: nothing to do)"; mirror sync
echo "== mirror verify"; mirror verify | tail -1
echo "== done; the JSON report of the first sync was $work/report.json (removed on exit)"
