#!/usr/bin/env bash
# Run the end-to-end suite against the real Janus 1.1.2 only (signalling on loopback, calls in
# the vcjanus network namespace, which needs root). Extra arguments go to pytest.
#   tests/e2e/run-against-janus.sh [-k busy] [-x] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v janus >/dev/null || [ -x /usr/bin/janus ] || {
  echo "Janus is not installed: apt-get install -y janus janus-tools" >&2; exit 1; }
VIDEOCALL_TEST_JANUS=1 exec python3 -m pytest tests/e2e -m janus -rs "$@"
