#!/usr/bin/env bash
# System packages the local runtime needs, installed only when missing:
#   Java 17+ (DynamoDB Local), npm (ships DynamoDBLocal.jar), Debian's OpenBLAS (fast fp32 matmul for mlx-cpu),
#   Debian's chromium (the dashboard's browser tests drive it with Playwright; its own browser download is not used).
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(java)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "$(uname -s)" = "Darwin" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}. Install with: brew install openjdk node (and put openjdk's bin on PATH)" >&2
    exit 1
  fi
  exit 0
fi

pkgs=()
for m in "${missing[@]}"; do
  case "$m" in
    java) pkgs+=(default-jre-headless) ;;
    npm) pkgs+=(npm) ;;
  esac
done
# OpenBLAS: optional but ~75x faster fp32 matmul for the mlx-cpu wheel (the agent preloads it).
if command -v dpkg-query >/dev/null 2>&1 && ! dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "ok installed"; then
  pkgs+=(libopenblas0-pthread)
fi

# Chromium: only for the dashboard's browser tests (`make test` asks with ISTHMUS_BOOTSTRAP_BROWSER=1; `make dev`
# does not need it; tests/e2e/test_dashboard_browser.py skips without it).
if [ "${ISTHMUS_BOOTSTRAP_BROWSER:-}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  pkgs+=(chromium)
fi

if [ ${#pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "please install: ${pkgs[*]} (Java 17+, npm, OpenBLAS, chromium)" >&2
    exit 1
  fi
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing system packages: ${pkgs[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
