#!/usr/bin/env bash
# Memory of `llmaas serve` with the default models: RSS when ready, after 8 concurrent chats, and the peak (VmHWM,
# which includes model loading). Usage: bash bench/rss.sh [PORT]   (needs curl; starts and stops its own server)
# The converted default model is cached in LLMAAS_MODEL_CACHE_DIR (default ~/.llmaas/models): the first run on a
# machine also converts the GGUF, and its peak includes that; quote the second run.
set -u
PORT=${1:-8799}
DATA=$(mktemp -d)
LLMAAS_DATA_DIR=$DATA LLMAAS_MODEL_CACHE_DIR=${LLMAAS_MODEL_CACHE_DIR:-$HOME/.llmaas/models} setsid llmaas serve --no-auth --no-worker --port "$PORT" >"$DATA/serve.log" 2>&1 </dev/null &
for _ in $(seq 1 180); do
  sleep 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")" = 200 ] && break
done
PID=$(pgrep -f "llmaas serve --no-auth --no-worker --port $PORT" | head -1)
rss() { grep -E 'VmRSS|VmHWM' "/proc/$PID/status" | awk '{printf "%s %.0f MB  ", $1, $2/1024}'; echo "($1)"; }
rss "ready"
pids=""
for _ in $(seq 1 8); do
  curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"SmolLM2-135M-Instruct","max_tokens":64,"messages":[{"role":"user","content":"Write a story about a cat."}]}' \
    >/dev/null & pids="$pids $!"
done
wait $pids
rss "after 8 concurrent chats"
kill "$PID"; sleep 2; rm -rf "$DATA"
