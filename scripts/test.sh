#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
#
#   scripts/test.sh            everything (what CI runs)
#   SEEDS=200 scripts/test.sh   fewer simulation seeds in the chaos smoke (default 1000)
#
# Needs: the Rust toolchain, python3, and PostgreSQL's initdb/postgres binaries (or
# DATABASE_URL pointing at a server where test databases may be created). Installs SoftHSMv2
# (Debian package softhsm2) when /usr/lib/softhsm/libsofthsm2.so is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
SEEDS="${SEEDS:-1000}"
JOBS="${JOBS:-$(nproc)}"
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "Python SDKs for the compatibility tests (official stripe and standardwebhooks packages)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import stripe, standardwebhooks' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check stripe==16.1.0 standardwebhooks==1.1.0
fi
export PAY_PYTHON="$PWD/.venv/bin/python"

step "SoftHSMv2 for the PKCS#11 HSM contract tests"
# The HSM contract suite runs against SoftHSMv2 through PKCS#11 as well as the software HSM;
# without the module those tests fail (PAY_HSM_SKIP_PKCS11=1 skips them explicitly).
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] && [ -z "${SOFTHSM2_MODULE:-}" ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2 >/dev/null
  else
    echo "SoftHSMv2 is missing: install softhsm2 or set SOFTHSM2_MODULE" >&2
  fi
fi

# Every test runs in one release build of the workspace: the simulator needs release speed, and
# building the dependencies once (not once for debug and again for release) is most of the time
# this script takes. The binaries below are the ones that build produced. CI builds from
# nothing, so it skips what only a later rebuild or a debugger uses: incremental compilation
# and the line tables (a failed assertion still names its file and line).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_RELEASE_DEBUG=false
fi

# Clippy checks the release profile, with the settings above: the proc macros and build scripts
# it compiles are then the ones the release build below uses, built once (in the dev profile
# they were built again, at the opt-level 1 every dependency has there).
step "Formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release --locked -- -D warnings

step "Unit, property, contract, integration and simulator tests (release)"
cargo test --workspace --release --locked

step "PCI DSS evidence: every feature against the embedded system, reports in reports/pcicheck"
./target/release/pcicheck run --out reports/pcicheck

step "Simulator smoke: ${SEEDS} seeds of chaos in swarm mode"
./target/release/paysim swarm --scenario scenarios/chaos.yaml --seeds "$SEEDS" --jobs "$JOBS"

# The two builds with deliberate defects come last: each rebuilds only the crates its feature
# touches (and replaces target/release/paymentd and paysim with that build).
step "Crash-and-resume test (fault-injection build of paymentd)"
cargo test --workspace --release --locked --features paymentd/fault-injection --test crash

step "Planted bugs are caught by the simulator (planted-bugs build)"
cargo test --workspace --release --locked --features sim/planted-bugs --test simulation -- caught shrinking

step "All tests passed"
