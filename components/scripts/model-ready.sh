#!/bin/bash
# Ready when TF Serving reports an AVAILABLE version of every configured model. Plain bash
# (/dev/tcp): the sidecar image has no HTTP client we can count on.
set -euo pipefail
while read -r model _; do
  [ -n "$model" ] || continue
  exec 3<>"/dev/tcp/127.0.0.1/${REST_PORT:?}"
  printf 'GET /v1/models/%s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$model" >&3
  if ! grep -Eq '"state" *: *"AVAILABLE"' <&3; then
    echo "model $model has no AVAILABLE version yet"
    exit 1
  fi
  exec 3<&-
done < "$MODELS_FILE"
