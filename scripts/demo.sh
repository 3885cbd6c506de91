#!/usr/bin/env bash
# The main job on a local default. First the AKS path, offline: `mirror resolve` of a Kubernetes
# 1.34 amd64 cluster plus a workload Deployment — every image the cluster and its workloads will
# pull, where each goes in the ACR, and why. Then two real registries on loopback stand in for
# MCR and your ACR, an AKS-shaped image set is seeded into the "MCR", and `mirror plan`,
# `mirror sync` (twice: the second run finds nothing to do) and `mirror verify` run against them.
#
#   scripts/demo.sh            # installs docker-registry first if it is missing (scripts/setup.sh)
#   SCALE=0.2 scripts/demo.sh  # a bigger image set (1.0 = real AKS sizes, ~6 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo

SCALE=${SCALE:-0.02}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --locked --quiet --bin mirror --example seed
target=${CARGO_TARGET_DIR:-target}/release
export DOCKER_CONFIG=$work/docker # the demo's registries need no credentials: never read yours
mkdir -p "$DOCKER_CONFIG"
mirror() { "$target/mirror" "$@"; }

echo "== the AKS path: mirror resolve of a Kubernetes 1.34 amd64 cluster and a workload Deployment"
cat >"$work/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: docker.io/library/nginx:1.27
YAML
cat >"$work/cluster.yaml" <<'YAML'
target: myacr.azurecr.io
platforms: [linux/amd64]
aks: {kubernetesVersion: "1.34", architectures: [amd64]}
workloads: {manifests: [deployment.yaml]}
YAML
# The whole table is long (every AKS component image, each with the line of the list it came
# from): show the header, the workload's image, kube-proxy (it follows the cluster's minor) and
# the count; `mirror resolve -c cluster.yaml` alone prints all of it.
mirror resolve -c "$work/cluster.yaml" 2>"$work/warnings.txt" | grep -A1 -E '^SOURCE|^docker.io/|/kube-proxy:|^[0-9]+ images' | grep -v '^--$'
echo
sed 's/^/  /' "$work/warnings.txt"

# A free loopback port: bash's /dev/tcp connect fails where nothing listens.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
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

mcr_port=$(free_port); start_registry mcr "$mcr_port"
acr_port=$(free_port); start_registry acr "$acr_port"
echo
echo "== MCR stand-in on 127.0.0.1:$mcr_port, ACR stand-in on 127.0.0.1:$acr_port"
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

echo "== mirror plan"; mirror plan -c "$work/mirror.yaml" || true
echo "== mirror sync"; mirror sync -c "$work/mirror.yaml" --report-json "$work/report.json"
echo "== mirror sync (again: nothing to do)"; mirror sync -c "$work/mirror.yaml"
echo "== mirror verify"; mirror verify -c "$work/mirror.yaml" | tail -1
echo "== done; the JSON report of the first sync was $work/report.json (removed on exit)"
