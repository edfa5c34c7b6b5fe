#!/usr/bin/env bash
# The Debian packages the lab and the tests need, installed when missing (root, apt).
#   bash lab/install_packages.sh
set -euo pipefail
packages=(iproute2 util-linux openssh-server openssh-client postgresql-15 postgresql-common
          postgresql-client-15 openssl pgbouncer redis-server nftables make curl pgbackrest
          stunnel4 prometheus)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install_packages: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install_packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
