#!/usr/bin/env bash
# Real clients against a real `ocular serve`: the official `openai` Python package (plain and
# streaming requests with an image) and the chat page in headless Chromium (upload, ask, read
# the streamed answer and the drawn box). Needs python3, node/npm and Debian's `chromium`
# (.ci/run installs it); the Python venv and node_modules are made here on first use.
#
#   scripts/test_clients.sh [path/to/ocular]    (default: target/debug/ocular)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/ocular}"
[ -x "$bin" ] || { echo "test_clients: no ocular binary at $bin (build it first)" >&2; exit 1; }
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "test_clients: no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2; exit 1; }

venv=target/client-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/python/requirements.txt
fi
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --silent --no-audit --no-fund)

# The built-in model on a free port; the scene has a blue square to find.
log=$(mktemp)
"$bin" serve -q --port 0 > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  url=$(sed -n 's/^listening on //p' "$log")
  [ -n "$url" ] && break
  kill -0 $server 2>/dev/null || { echo "test_clients: the server exited: $(cat "$log")" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "test_clients: the server did not start" >&2; exit 1; }
export OCULAR_URL="$url" IMAGE="$PWD/examples/scene.png" CHROMIUM="$chromium"

QUESTION="What colour is the square?" GROUND="Locate the blue square." "$venv/bin/python" tests/python/test_openai_client.py
(cd tests/browser && QUESTION="Locate the blue square." EXPECT_BOXES=1 node chat_page.mjs)

# Clean shutdown on SIGTERM.
kill -TERM $server
wait $server
trap - EXIT
rm -f "$log"
echo "test_clients: ok"
