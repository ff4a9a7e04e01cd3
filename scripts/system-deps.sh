#!/usr/bin/env bash
# Installs the Debian packages the tests use: official Fashion-MNIST files, headless Chromium and a
# Korean font (the glossary gives the Korean terms; without it the screenshots show empty boxes).
# Runs apt-get only as root; otherwise says what to install.
set -euo pipefail
packages=(dataset-fashion-mnist chromium chromium-driver fonts-nanum)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
  echo "Installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
else
  echo "Not installed: ${missing[*]}. Install them with: sudo apt-get install ${missing[*]}"
  echo "(tests that need them are skipped, each with its reason)"
fi
