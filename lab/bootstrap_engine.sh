#!/usr/bin/env bash
# Makes the Pulumi engine available to this clone in .engine/bin (ignored by git):
#   1. the programs already on PATH, when all four are there;
#   2. else Pulumi's official installer and `pulumi plugin install`, when get.pulumi.com answers;
#   3. else a Go build: the CLI from the module proxy, the three plugins from the upstream
#      source in $ENGINE_SRC (see its SOURCES.md), each stamped with its version.
# Builds and Go's caches live outside the clone, per user and keyed by version
# ($ENGINE_HOME, default ~/.cache/mastodon-data/engine), so a second clone finds them in seconds.
# Writes .engine/status.json: per component "ok" with where it came from, or "error" with why.
set -uo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-3.259.0}"       # newest pkg/v3 whose zip the module proxy serves
COMMAND_VERSION="${COMMAND_VERSION:-1.2.1}"       # = pulumi-command in requirements.txt
DIGITALOCEAN_VERSION="${DIGITALOCEAN_VERSION:-4.84.1}"   # = pulumi-digitalocean (installer)
DIGITALOCEAN_SRC_VERSION="${DIGITALOCEAN_SRC_VERSION:-4.76.0}"  # newest source in ENGINE_SRC
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENGINE_HOME="${ENGINE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/mastodon-data/engine}"
ENGINE_SRC="${ENGINE_SRC:-}"
BIN="$ROOT/.engine/bin"
LOGS="$ENGINE_HOME/logs"
mkdir -p "$BIN" "$LOGS"
export GOMODCACHE="$ENGINE_HOME/go/mod" GOCACHE="$ENGINE_HOME/go/build"
export GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local

declare -A STATUS
note() { echo "bootstrap: $*" >&2; }
record() { STATUS["$1"]="$2"; }
PROGRAMS=(pulumi pulumi-language-python pulumi-resource-command pulumi-resource-digitalocean)

link() {  # link NAME PATH: the clone's bin points at the per-user copy
  ln -sfn "$2" "$BIN/$1"
}

from_path() {
  local name
  for name in "${PROGRAMS[@]}"; do command -v "$name" >/dev/null || return 1; done
  for name in "${PROGRAMS[@]}" pulumi-language-python-exec; do
    command -v "$name" >/dev/null && link "$name" "$(command -v "$name")"
  done
  local c; for c in cli language-python command digitalocean; do record "$c" "ok:PATH"; done
}

from_installer() {
  local script root="$ENGINE_HOME/official-$PULUMI_VERSION"
  script="$(curl -fsSL --max-time 10 https://get.pulumi.com 2>/dev/null)" || return 1
  note "official installer reachable: installing pulumi $PULUMI_VERSION and the two plugins"
  if [[ ! -x "$root/bin/pulumi" ]]; then
    sh -c "$script" -s -- --version "$PULUMI_VERSION" --install-root "$root" --no-edit-path \
      >"$LOGS/installer.log" 2>&1 || return 1
  fi
  local plugins="$ENGINE_HOME/official-plugins"
  PULUMI_HOME="$plugins" "$root/bin/pulumi" plugin install resource command "$COMMAND_VERSION" \
    >>"$LOGS/installer.log" 2>&1 || return 1
  PULUMI_HOME="$plugins" "$root/bin/pulumi" plugin install resource digitalocean \
    "$DIGITALOCEAN_VERSION" >>"$LOGS/installer.log" 2>&1 || return 1
  local f; for f in "$root/bin/"*; do link "$(basename "$f")" "$f"; done
  link pulumi-resource-command \
    "$plugins/plugins/resource-command-v$COMMAND_VERSION/pulumi-resource-command"
  link pulumi-resource-digitalocean \
    "$plugins/plugins/resource-digitalocean-v$DIGITALOCEAN_VERSION/pulumi-resource-digitalocean"
  local c; for c in cli language-python command digitalocean; do record "$c" "ok:installer"; done
}

# build COMPONENT NAME VERSION DIR PACKAGE LDFLAG [OUT]: `go build` in DIR into OUT/NAME (default
# $ENGINE_HOME/NAME-VERSION), once per version.
build() {
  local component="$1" name="$2" version="$3" dir="$4" package="$5" ldflag="$6"
  local out="${7:-$ENGINE_HOME/$name-$version}" log="$LOGS/$name-$version.log"
  if [[ -x "$out/$name" ]]; then link "$name" "$out/$name"; record "$component" "ok:cached"; return; fi
  [[ -d "$dir" ]] || { record "$component" "error:no source at $dir (set ENGINE_SRC)"; return 1; }
  note "building $name $version (minutes on a cold cache; log: $log)"
  mkdir -p "$out"
  if (cd "$dir" && go build -ldflags "-X $ldflag=$version" -o "$out/$name.tmp" "$package") \
      >"$log" 2>&1; then
    mv "$out/$name.tmp" "$out/$name"; link "$name" "$out/$name"; record "$component" "ok:go-build"
  else
    record "$component" "error:go build failed: $(grep -m1 -E 'error|cannot|403|404' "$log" \
      | tr -d '"\\' | cut -c1-200) (log: $log)"
    return 1
  fi
}

# The CLI module has replace directives of its own, so it is built through a wrapper module.
cli_wrapper() {
  local dir="$ENGINE_HOME/src/pulumi-$PULUMI_VERSION"
  mkdir -p "$dir"
  if [[ ! -f "$dir/go.sum" ]]; then
    cat >"$dir/go.mod" <<MOD
module example.local/engine-pulumi

go 1.25

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
MOD
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' \
      >"$dir/tools.go"
    (cd "$dir" && go get "github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION" && go mod tidy) \
      >"$LOGS/pulumi-$PULUMI_VERSION-modules.log" 2>&1 || rm -f "$dir/go.sum"
  fi
  echo "$dir"
}

from_source() {
  command -v go >/dev/null || { note "Go is missing: install Go (https://go.dev/dl/) or Pulumi."; return 1; }
  local sdk_version="github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"
  # The language host sits next to the CLI, as in Pulumi's own packages: the CLI finds it there.
  local cli_dir="$ENGINE_HOME/pulumi-v$PULUMI_VERSION"
  build cli pulumi "v$PULUMI_VERSION" "$(cli_wrapper)" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "$sdk_version" "$cli_dir"
  if [[ -z "$ENGINE_SRC" ]]; then
    local c; for c in language-python command digitalocean; do
      record "$c" "error:ENGINE_SRC is not set: point it at the plugins' upstream source (SOURCES.md) or use the official installer"
    done
    return 1
  fi
  build language-python pulumi-language-python "v$PULUMI_VERSION" \
    "$ENGINE_SRC/pulumi-language-python" . "$sdk_version" "$cli_dir"
  # The script the language host runs ships in the sdk/v3 module zip (python/cmd/).
  local exec_script="$GOMODCACHE/github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION/python/cmd/pulumi-language-python-exec"
  if [[ -f "$exec_script" ]]; then
    install -m 0755 "$exec_script" "$cli_dir/"
    link pulumi-language-python-exec "$cli_dir/pulumi-language-python-exec"
  elif [[ "${STATUS[language-python]}" == ok* ]]; then
    record language-python "error:pulumi-language-python-exec not found in the sdk/v3 module"
  fi
  build command pulumi-resource-command "$COMMAND_VERSION" "$ENGINE_SRC/pulumi-command/provider" \
    ./cmd/pulumi-resource-command github.com/pulumi/pulumi-command/provider/pkg/version.Version
  build digitalocean pulumi-resource-digitalocean "$DIGITALOCEAN_SRC_VERSION" \
    "$ENGINE_SRC/pulumi-digitalocean/provider" ./cmd/pulumi-resource-digitalocean \
    github.com/pulumi/pulumi-digitalocean/provider/v4/pkg/version.Version
}

exec 9>"$ENGINE_HOME/.lock"
flock -w 3600 9 || { note "another bootstrap holds $ENGINE_HOME/.lock"; exit 1; }
start=$(date +%s)
if from_path; then note "using the Pulumi programs on PATH"
elif from_installer; then :
else
  [[ -x "$ENGINE_HOME/pulumi-v$PULUMI_VERSION/pulumi" ]] \
    || note "official installer unreachable: building the engine from source (first run takes minutes)"
  from_source
fi
elapsed=$(( $(date +%s) - start ))

{
  printf '{\n  "pulumi_version": "%s",\n  "engine_home": "%s",\n  "seconds": %d' \
    "$PULUMI_VERSION" "$ENGINE_HOME" "$elapsed"
  for key in cli language-python command digitalocean; do
    value="${STATUS[$key]:-error:not attempted}"
    printf ',\n  "%s": {"state": "%s", "detail": "%s"}' "$key" "${value%%:*}" "${value#*:}"
  done
  printf '\n}\n'
} >"$ROOT/.engine/status.json"
cat "$ROOT/.engine/status.json"
for key in cli language-python command digitalocean; do
  [[ "${STATUS[$key]:-}" == ok* ]] || { note "the engine is incomplete: $key: ${STATUS[$key]:-}"; exit 1; }
done
