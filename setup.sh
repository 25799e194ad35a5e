#!/usr/bin/env bash
# Installs what prunekd needs on a fresh Debian/Ubuntu machine: the real Fashion-MNIST files
# (Debian package dataset-fashion-mnist), Chromium (the end-to-end test of MLflow's UI and
# scripts/mlflow_screenshot.py look at the UI in it), a virtual environment in .venv, PyTorch, and
# prunekd itself with its test extras. Safe to rerun: what is there already is kept.
set -euo pipefail
cd "$(dirname "$0")"

packages=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || packages+=(dataset-fashion-mnist)
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
    # not fatal either: a mirror out of reach, or a distribution without one of the packages
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${packages[@]}"; } ||
      echo "setup.sh: apt-get could not install ${packages[*]}; going on without (see the README)" >&2
  else
    # Not fatal: `prunekd prepare` also reads data/raw/fashion_mnist/ or downloads the files; without
    # Chromium, tests/e2e/test_mlflow_ui.py fails, saying so.
    echo "setup.sh: not installing the Debian package(s) ${packages[*]} (needs apt-get, and root or sudo" \
         "without a password); prepare will read data/raw/fashion_mnist/ or download Fashion-MNIST, and" \
         "the MLflow UI test needs Chromium (apt-get install chromium)" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/pip --disable-pip-version-check -q"
# PyTorch through pip, which reads the machine's pip configuration (a local copy of the wheels, a
# version cap) where there is one
$pip install torch==2.14.1 torchvision==0.29.1
# The rest (some 240 packages) through uv, which keeps the PyTorch installed above: about 25 s on
# 2 cores where pip took two minutes, and the same versions (`pip freeze` compared). Where uv cannot
# be had or fails, pip installs them.
if ! { $pip install uv && .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -e ".[test]"; }; then
  echo "setup.sh: uv could not install prunekd's packages; installing them with pip" >&2
  $pip install -e ".[test]"
fi
echo "prunekd is installed in .venv (activate it with: . .venv/bin/activate)"
