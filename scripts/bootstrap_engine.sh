#!/usr/bin/env bash
# Makes the Pulumi engine available in .engine/bin (project-local, ignored by git):
#   1. the binaries already on PATH, when all three are there;
#   2. else Pulumi's official installer, when get.pulumi.com answers;
#   3. else a Go build from the module proxy at the pinned versions, cached in .engine/.
# Writes .engine/status.json: one entry per component, "ok" with its path or "error" with why.
set -uo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-3.259.0}"   # newest pkg/v3 whose zip the module proxy serves here
COMMAND_VERSION="${COMMAND_VERSION:-1.2.1}"    # matches requirements.txt (pulumi-command)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENGINE="$ROOT/.engine"
BIN="$ENGINE/bin"
mkdir -p "$BIN" "$ENGINE/logs"
export GOPATH="$ENGINE/gopath" GOMODCACHE="$ENGINE/gopath/pkg/mod" GOCACHE="$ENGINE/gocache"
export GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local

declare -A STATUS
note() { echo "bootstrap: $*" >&2; }
record() { STATUS["$1"]="$2"; }

have_all_on_path() {
  command -v pulumi >/dev/null && command -v pulumi-language-python >/dev/null \
    && command -v pulumi-resource-command >/dev/null
}

from_path() {
  local name
  for name in pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-command; do
    command -v "$name" >/dev/null && ln -sf "$(command -v "$name")" "$BIN/$name"
  done
  record cli "ok:PATH"; record language-python "ok:PATH"; record command "ok:PATH"
}

from_installer() {
  local script
  script="$(curl -fsSL --max-time 10 https://get.pulumi.com 2>/dev/null)" || return 1
  note "official installer reachable: installing pulumi $PULUMI_VERSION"
  sh -c "$script" -s -- --version "$PULUMI_VERSION" --install-root "$ENGINE/official" \
      --no-edit-path >"$ENGINE/logs/installer.log" 2>&1 || return 1
  ln -sf "$ENGINE/official/bin/"* "$BIN/"
  PATH="$BIN:$PATH" pulumi plugin install resource command "$COMMAND_VERSION" \
      >>"$ENGINE/logs/installer.log" 2>&1 || return 1
  record cli "ok:installer"; record language-python "ok:installer"; record command "ok:installer"
}

# go_build NAME MODULE VERSION PACKAGE [REPLACE...]: builds PACKAGE into $BIN/NAME via a wrapper
# module (pkg/v3's own go.mod has replace directives, so `go install pkg@version` refuses).
go_build() {
  local name="$1" module="$2" version="$3" package="$4"; shift 4
  local dir="$ENGINE/build/$name" log="$ENGINE/logs/$name.log"
  if [[ -x "$BIN/$name" && -f "$dir/built-$version-v2" ]]; then record "$name" "ok:cached"; return 0; fi
  # A module the proxy refused is not asked again for the same version (RETRY=1 asks anyway).
  if [[ -f "$dir/failed-$version" && "${RETRY:-0}" != 1 ]]; then
    record "$name" "error:$(cat "$dir/failed-$version")"; return 1
  fi
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<MOD
module example.local/engine-$name

go 1.25
MOD
  for r in "$@"; do echo "replace $r" >>"$dir/go.mod"; done
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >"$dir/tools.go"
  (
    cd "$dir" &&
    go get "$module@$version" &&
    go mod tidy &&
    go build -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
      -o "$BIN/$name" "$package"
  ) >"$log" 2>&1
  if [[ $? -eq 0 ]]; then
    touch "$dir/built-$version-v2"; record "$name" "ok:go-build"
  else
    grep -m1 -E 'not available|403|404|error|cannot|does not contain' "$log" | tr -d '"\\' \
      | cut -c1-300 >"$dir/failed-$version"
    record "$name" "error:$(cat "$dir/failed-$version")"
    return 1
  fi
}

from_go() {
  go_build pulumi github.com/pulumi/pulumi/pkg/v3 "v$PULUMI_VERSION" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e"
  [[ "${STATUS[pulumi]}" == ok* ]] && record cli "${STATUS[pulumi]}" || record cli "${STATUS[pulumi]}"
  # The exec script ships in the sdk/v3 zip (python/cmd/), not with the language host module.
  local exec_script
  exec_script="$(ls "$GOMODCACHE"/github.com/pulumi/pulumi/sdk/v3@v"$PULUMI_VERSION"/python/cmd/pulumi-language-python-exec 2>/dev/null)"
  [[ -n "$exec_script" ]] && install -m 0755 "$exec_script" "$BIN/pulumi-language-python-exec"
  go_build pulumi-language-python github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 \
    "v$PULUMI_VERSION" github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
  record language-python "${STATUS[pulumi-language-python]}"
  go_build pulumi-resource-command github.com/pulumi/pulumi-command/provider "v$COMMAND_VERSION" \
    github.com/pulumi/pulumi-command/provider/cmd/pulumi-resource-command
  if [[ "${STATUS[pulumi-resource-command]}" == error* ]]; then
    # Go falls back to the root module, which hides why: ask the proxy about the nested one.
    local proxy; proxy="$(go env GOPROXY)"; proxy="${proxy%%,*}"
    local url="$proxy/github.com/pulumi/pulumi-command/provider/@v/v$COMMAND_VERSION.info"
    local answer
    answer="$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$url")"
    STATUS[pulumi-resource-command]="error:module github.com/pulumi/pulumi-command/provider@v$COMMAND_VERSION: the module proxy answers HTTP $answer (${STATUS[pulumi-resource-command]#error:})"
  fi
  record command "${STATUS[pulumi-resource-command]}"
}

start=$(date +%s)
if have_all_on_path; then from_path
elif from_installer; then :
else
  command -v go >/dev/null || { note "Go is missing: install it (https://go.dev/dl/) or Pulumi itself."; exit 1; }
  note "official installer unreachable: building pulumi $PULUMI_VERSION with Go (first run takes minutes)"
  from_go
fi
elapsed=$(( $(date +%s) - start ))

{
  printf '{\n  "pulumi_version": "%s",\n  "command_version": "%s",\n  "seconds": %d' \
    "$PULUMI_VERSION" "$COMMAND_VERSION" "$elapsed"
  for key in cli language-python command; do
    value="${STATUS[$key]:-error:not attempted}"
    printf ',\n  "%s": {"state": "%s", "detail": "%s"}' "$key" "${value%%:*}" "${value#*:}"
  done
  printf '\n}\n'
} >"$ENGINE/status.json"
cat "$ENGINE/status.json"
# Exit 0 when the CLI exists: the tests read status.json to skip what a missing plugin prevents.
[[ "${STATUS[cli]:-}" == ok* ]]
