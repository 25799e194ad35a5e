#!/usr/bin/env bash
# Installs what prunekd needs on a fresh Debian/Ubuntu machine: the real Fashion-MNIST files
# (Debian package dataset-fashion-mnist), a virtual environment in .venv, PyTorch, and prunekd
# itself with its test extras. Safe to rerun: what is there already is kept.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq dataset-fashion-mnist
  else
    # Not fatal: `prunekd prepare` also reads data/raw/fashion_mnist/ or downloads the files.
    echo "setup.sh: not installing the Debian package dataset-fashion-mnist (needs apt-get, and root or" \
         "sudo without a password); prepare will read data/raw/fashion_mnist/ or download Fashion-MNIST" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/pip --disable-pip-version-check -q"
$pip install torch==2.14.1 torchvision==0.29.1
$pip install -e ".[test]"
echo "prunekd is installed in .venv (activate it with: . .venv/bin/activate)"
