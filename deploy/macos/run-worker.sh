#!/usr/bin/env bash
# Start a Core ML Converter worker on a Mac (a "Mac runner"). It takes the jobs of the
# `macos` queue first (packages validated on real Core ML: CPU, GPU and Neural Engine),
# then the general queue. Jobs run in spawned processes (forking crashes on macOS).
#
#   deploy/macos/run-worker.sh                  # settings from ~/.config/coreml-converter/worker.env
#   deploy/macos/run-worker.sh --burst          # extra arguments go to `python -m worker`
#
# Settings (environment, or the env file; see worker.env.example next to this script):
#   REDIS_URL                    the Redis the app uses, e.g. redis://:PASSWORD@10.0.0.5:6379/0
#   COREML_CONVERTER_SECRET_KEY  the same key as the app and the other workers
#   HF_ENDPOINT                  optional, a self-hosted Hub
#   QUEUES                       optional, default "macos,default"
#   PYTHON                       optional, the Python 3.11 to build .venv with (default python3.11)
#
# launchd runs this script from co.huggingface.coreml-converter.worker.plist.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

ENV_FILE="${COREML_CONVERTER_ENV:-$HOME/.config/coreml-converter/worker.env}"
if [ -f "$ENV_FILE" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    set +a
fi

if [ "$(uname -s)" != "Darwin" ]; then
    echo "error: this script starts a Mac runner; on Linux run: python -m worker --queues tries,default" >&2
    exit 2
fi
: "${REDIS_URL:?set REDIS_URL (in $ENV_FILE or the environment) to the Redis the app uses}"
: "${COREML_CONVERTER_SECRET_KEY:?set COREML_CONVERTER_SECRET_KEY to the same key as the app}"
export REDIS_URL COREML_CONVERTER_SECRET_KEY

# The same pinned toolchain as `make run`, installed once (again when requirements change).
PYTHON="${PYTHON:-python3.11}"
STAMP=.venv/.installed-macos
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$STAMP" ] || [ requirements.txt -nt "$STAMP" ]; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet torch==2.13.0
    .venv/bin/pip install --quiet -r requirements.txt
    touch "$STAMP"
fi

# REDIS_URL is read from the environment, not passed as --url: a password on the command
# line would show in `ps`.
exec .venv/bin/python -m worker \
    --queues "${QUEUES:-macos,default}" \
    --name "${WORKER_NAME:-$(hostname -s)-mac}" \
    --worker-class spawn \
    "$@"
