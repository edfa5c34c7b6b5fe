#!/usr/bin/env bash
# The Debian packages the lab and the tests need, installed when missing (root, apt).
#   bash lab/install_packages.sh
# valkey-server 8 (the stand-in's managed Valkey) comes from bookworm-backports: that suite is
# added to apt's sources when missing (from the machine's own bookworm source), and its packages
# install only when asked for with -t.
set -euo pipefail
packages=(iproute2 util-linux openssh-server openssh-client postgresql-15 postgresql-common
          postgresql-client-15 openssl pgbouncer redis-server nftables make curl pgbackrest
          stunnel4 prometheus prometheus-postgres-exporter prometheus-node-exporter
          python3-prometheus-client haproxy mmdebstrap)
backports=(valkey-server)
BACKPORTS_SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources
missing=() missing_backports=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
for p in "${backports[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing_backports+=("$p"); done
((${#missing[@]} + ${#missing_backports[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install_packages: missing ${missing[*]} ${missing_backports[*]}; run as root" >&2
  exit 1
fi

# The deb822 stanza of the machine's bookworm suite, its Suites line made bookworm-backports.
add_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local stanza
  stanza=$(awk -v RS= '/(^|\n)Suites:[^\n]*bookworm( |\n|$)/ {print; exit}' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v '^#' \
    | sed 's/^Suites:.*/Suites: bookworm-backports/')
  if [[ -z $stanza ]]; then
    echo "install_packages: no bookworm source in /etc/apt/sources.list.d/debian.sources" \
         "to add bookworm-backports from; add that suite to apt's sources by hand" >&2
    exit 1
  fi
  printf '%s\n' "$stanza" > "$BACKPORTS_SOURCES"
  echo "install_packages: added $BACKPORTS_SOURCES" >&2
}

echo "install_packages: installing ${missing[*]} ${missing_backports[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
((${#missing_backports[@]})) && add_backports
apt-get update -q
((${#missing[@]})) && apt-get install -y -q --no-install-recommends "${missing[@]}"
((${#missing_backports[@]})) &&
  apt-get install -y -q --no-install-recommends -t bookworm-backports "${missing_backports[@]}"
exit 0
