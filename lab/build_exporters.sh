#!/usr/bin/env bash
# Builds the pinned upstream exporters the alert rules read (docs/operators/monitoring.md) into
# $EXPORTERS_HOME/<name>-<version>/<name> (default ~/.cache/mastodon-data/exporters, outside the
# clone, once per version) and links them from the clone's .engine/bin: pgbouncer_exporter
# v0.12.1 and ssl_exporter v2.4.1, from the Go module proxy. (pgbackrest_exporter is not built:
# the proxy refuses its source; node_exporter serves the backup metrics, host/backup_metrics.py.)
# Debian's prometheus-postgres-exporter and prometheus-node-exporter come from
# lab/install_packages.sh. Prints one line per exporter: ok or error with why; exits 1 on any error.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EXPORTERS_HOME="${EXPORTERS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/mastodon-data/exporters}"
BIN="$ROOT/.engine/bin"
mkdir -p "$BIN" "$EXPORTERS_HOME/logs"
export GOMODCACHE="$EXPORTERS_HOME/go/mod" GOCACHE="$EXPORTERS_HOME/go/build"
export GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
VERSION_FLAG="github.com/prometheus/common/version.Version"
failed=0

# from_proxy NAME MODULE VERSION: the module's zip from the proxy (`go mod download`; `go
# install m@v` would also ask for the version list, which the proxy here refuses), built in a
# copy of its tree, stamped with its version.
from_proxy() {
  local name="$1" module="$2" version="$3" out="$EXPORTERS_HOME/$1-$3"
  local dir="$EXPORTERS_HOME/src/$name-$version" log="$EXPORTERS_HOME/logs/$name-$version.log"
  local tree
  tree=$(go mod download -json "$module@$version" 2>>"$log" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d "$tree" ]] || return 1
  rm -rf "$dir" && mkdir -p "$dir" "$out" && cp -r "$tree/." "$dir" && chmod -R u+w "$dir" &&
    (cd "$dir" && go build -ldflags "-X $VERSION_FLAG=${version#v}" -o "$out/$name" .) >>"$log" 2>&1
}

# exporter NAME VERSION HOW ARGS...: build once, then link.
exporter() {
  local name="$1" version="$2" how="$3"; shift 3
  local binary="$EXPORTERS_HOME/$name-$version/$name"
  if [[ ! -x "$binary" ]] && ! "$how" "$name" "$@" "$version"; then
    echo "build_exporters: $name $version: error: $(tail -c 300 "$EXPORTERS_HOME/logs/$name-$version.log")" >&2
    failed=1; return
  fi
  ln -sfn "$binary" "$BIN/$name"
  echo "build_exporters: $name $version: ok ($binary)" >&2
}

exec 9>"$EXPORTERS_HOME/.lock"
flock -w 1800 9 || { echo "build_exporters: another build holds $EXPORTERS_HOME/.lock" >&2; exit 1; }
exporter pgbouncer_exporter v0.12.1 from_proxy github.com/prometheus-community/pgbouncer_exporter
exporter ssl_exporter v2.4.1 from_proxy github.com/ribbybibby/ssl_exporter/v2
exit "$failed"
