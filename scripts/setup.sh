#!/usr/bin/env bash
# Installs what the README's two commands need, so that on a machine with only Rust they are the
# whole story: `scripts/setup.sh demo` (scripts/demo.sh) and `scripts/setup.sh test`
# (scripts/test.sh and .ci/run). What is there already is left alone. What is missing is installed
# when this script can (Debian packages with apt-get, as root or through sudo without a password;
# Azurite with `npm ci`); otherwise it stops with the exact command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The commands each use needs, as "command:Debian package". docker-registry is the CNCF
# distribution registry every integration test and the demo start on loopback; skopeo is the
# independent client the tests check what mirror wrote with; xmllint checks the JUnit reports
# against the Jenkins schema (the ignored schema tests of tests/reports.rs, which .ci/run runs);
# openssl makes cosign keys and signatures and python3 runs tests/support/sign.py, which makes
# Notary Project signatures (tests/provenance.rs).
case "${1:-}" in
  demo) needs=(docker-registry:docker-registry curl:curl) ;;
  test) needs=(docker-registry:docker-registry skopeo:skopeo xmllint:libxml2-utils openssl:openssl python3:python3-venv) ;;
  *) echo "usage: scripts/setup.sh demo|test" >&2; exit 1 ;;
esac

missing=()
for n in "${needs[@]}"; do
  command -v "${n%%:*}" >/dev/null || missing+=("${n#*:}")
done
# Debian's python3 comes without the venv module the signing tools are installed into (below).
if [ "$1" = test ] && command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  # As root, or with sudo that needs no password (CI runners); never a password prompt.
  if [ "$EUID" -eq 0 ]; then as_root=(); else as_root=(sudo -n); fi
  if command -v apt-get >/dev/null && "${as_root[@]}" true 2>/dev/null; then
    echo "== installing ${missing[*]} (apt-get)"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing: ${missing[*]}. Install these Debian/Ubuntu packages, then run this again:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

# pycose, cryptography and asn1crypto for tests/support/sign.py, pinned in
# tests/support/requirements.txt: used from the system python3 when it has them, else installed
# into .venv-sign/ (which the tests use when it exists).
if [ "$1" = test ] && ! python3 -c 'import pycose, cryptography, asn1crypto' 2>/dev/null && [ ! -x .venv-sign/bin/python3 ]; then
  echo "== installing pycose, cryptography, asn1crypto (pip, into .venv-sign)"
  python3 -m venv .venv-sign
  .venv-sign/bin/python3 -m pip install --quiet --disable-pip-version-check -r tests/support/requirements.txt
fi

# Azurite, the Azure Storage emulator the run-record and lock tests start: an npm package pinned
# in package-lock.json, installed into node_modules/.
if [ "$1" = test ] && [ ! -x node_modules/.bin/azurite-blob ]; then
  if command -v npm >/dev/null; then
    echo "== installing Azurite (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
  else
    echo "missing: Azurite, which needs Node.js 20 or later and npm. Install them (https://nodejs.org," >&2
    echo "or: sudo apt-get install -y nodejs npm), then run this again, or in $(pwd): npm ci" >&2
    exit 1
  fi
fi
