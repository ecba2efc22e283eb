#!/usr/bin/env bash
# Set up a fresh clone: a virtual environment in .venv, the package, and the real Fashion-MNIST CSVs.
#   bash scripts/setup.sh         # to train
#   bash scripts/setup.sh serve   # also installs what export --to onnx and serve need
#   bash scripts/setup.sh test    # also installs what the tests need (serve's packages, Debian's chromium)
# TORCH_SPEC picks the torch build (default torch==2.13.0, the CPU build this project is developed on);
# set it to e.g. "torch" on a CUDA machine, or install torch into .venv yourself first.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "==> installing ${TORCH_SPEC:-torch==2.13.0}"
  "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
fi
extra=""
case "${1:-}" in
  test) extra="[test]" ;;
  serve) extra="[serve]" ;;
esac
echo "==> installing fashion_conv$extra"
"${PIP[@]}" -e ".$extra"

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  # The page test drives a real browser through Playwright: Debian's chromium, not a browser download.
  if command -v apt-get >/dev/null; then
    echo "==> installing Debian package chromium"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: no /usr/bin/chromium and no apt-get: the page test will be skipped" >&2
  fi
fi

echo "==> preparing data/processed/*.csv"
if ! .venv/bin/python -m fashion_conv.prepare; then
  # No local copy and no mirror: Debian/Ubuntu ship the official files as a package.
  if command -v apt-get >/dev/null; then
    echo "==> installing Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
    .venv/bin/python -m fashion_conv.prepare
  else
    exit 1
  fi
fi
echo "==> ready: .venv/bin/python -m fashion_conv.fit"
