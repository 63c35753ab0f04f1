#!/usr/bin/env bash
# Set up condsim-annot on a fresh machine: a virtualenv in ./.venv with the project installed.
#   bash scripts/bootstrap.sh          # the tool
#   bash scripts/bootstrap.sh --dev    # + test dependencies (incl. llama.cpp's server, built from source),
#                                      #   system packages for browser/TUI tests,
#                                      #   and the local PostgreSQL server started if it is down
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is a CPU build found on local disk here; an unpinned
# torch (pulled in by sentence-transformers) would download a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
if [[ $DEV == 1 ]]; then
  # llm-local: llama-cpp-python[server] + a 270M GGUF for the real-model judge test (compiles once, ~8 min on 2 cores)
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" .venv/bin/python -m pip install -q -e ".[dev,llm-local]"
else
  .venv/bin/python -m pip install -q -e .
fi

if [[ $DEV == 1 ]]; then
  # System tools the tests drive: tmux (a real TUI session) and Chromium (Argilla UI, HTML report).
  need=()
  command -v tmux >/dev/null || need+=(tmux)
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  if (( ${#need[@]} )); then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "warning: please install: ${need[*]} (the tests that need them will be skipped)" >&2
    fi
  fi
  # The tests use the real PostgreSQL on 127.0.0.1:5432 (database 'test', trust auth).
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
      for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
  fi
  # Redis is optional (the Argilla test server runs its jobs in-process without it).
  if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/redis-ci.log >/dev/null 2>&1 || true
  fi
  # The Argilla tests run the real argilla-server in its own virtualenv (it pins old FastAPI/Pydantic);
  # build it once here (a no-op when it is ready) rather than inside a test's set-up.
  .venv/bin/condsim-annot argilla install-server --venv "${CONDSIM_ARGILLA_VENV:-$HOME/.cache/condsim-annot/argilla-venv}"
fi
echo "condsim-annot installed in .venv ($(.venv/bin/condsim-annot --version))"
