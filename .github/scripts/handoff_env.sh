#!/usr/bin/env bash
# The deploy pipeline's hand-off: the stack's outputs into .env.production on every app server.
#
#   STACK=prod APP_SERVERS="mastodon@10.118.0.20 mastodon@10.118.0.21" \
#   APP_ENV_PATH=/home/mastodon/live/.env.production \
#   APP_SSH_KEY_FILE=~/.ssh/deploy APP_KNOWN_HOSTS_FILE=~/.ssh/known_hosts \
#   [APP_RESTART_COMMAND='sudo systemctl restart mastodon-web mastodon-sidekiq mastodon-streaming'] \
#   bash .github/scripts/handoff_env.sh
#
# Per server: copy its current .env.production here (the app's own keys, SECRET_KEY_BASE and the
# rest, are kept line for line), render the stack's keys into it with `mastodon-data render-env`
# (`pulumi stack output --json --show-secrets | mastodon-data render-env --output FILE`: mode
# 0600, values never printed, DATABASE_URL/REPLICA_DATABASE_URL removed), copy it back next to
# the original and swap it in with one rename. Everything stays in a 0700 temporary directory
# removed on exit; nothing secret reaches stdout or stderr. SSH is key-only with known host keys
# (StrictHostKeyChecking=yes): log in as the user that owns .env.production (mastodon).
# shellcheck disable=SC2029  # remote commands are built here on purpose, paths quoted with %q
set -euo pipefail
umask 077
cd "$(dirname "$0")/../.."

: "${STACK:?set STACK (the Pulumi stack)}"
: "${APP_ENV_PATH:?set APP_ENV_PATH (e.g. /home/mastodon/live/.env.production)}"
read -r -a servers <<<"${APP_SERVERS:-}"
if ((${#servers[@]} == 0)); then
  echo "handoff: APP_SERVERS is empty for stack $STACK: nothing handed over"
  exit 0
fi
: "${APP_SSH_KEY_FILE:?set APP_SSH_KEY_FILE (private key of the deploy user)}"
: "${APP_KNOWN_HOSTS_FILE:?set APP_KNOWN_HOSTS_FILE (the app servers host keys)}"
# The operator's command from the venv (`make`, the workflows), else the package in this checkout.
render=("${PYTHON:-python3}" -m mastodon_data.cli render-env)
[[ -x venv/bin/mastodon-data ]] && render=(venv/bin/mastodon-data render-env)

work="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/handoff.XXXXXX")"
trap 'rm -rf "$work"' EXIT
ssh_options=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$APP_KNOWN_HOSTS_FILE"
  -o IdentitiesOnly=yes -i "$APP_SSH_KEY_FILE")
printf -v remote_path '%q' "$APP_ENV_PATH"

# Once: the outputs with their secrets, 0600 inside the 0700 directory.
pulumi stack output --json --show-secrets --stack "$STACK" >"$work/outputs.json"

for server in "${servers[@]}"; do
  file="$work/.env.production"
  rm -f "$file"
  if ssh "${ssh_options[@]}" "$server" "test -f $remote_path"; then
    scp -q "${ssh_options[@]}" "$server:$APP_ENV_PATH" "$file"
  else
    echo "handoff: $server has no $APP_ENV_PATH yet: writing the stack's keys only"
  fi
  "${render[@]}" --output "$file" <"$work/outputs.json"
  scp -q "${ssh_options[@]}" "$file" "$server:$APP_ENV_PATH.handoff"
  ssh "${ssh_options[@]}" "$server" \
    "chmod 600 $remote_path.handoff && mv -f $remote_path.handoff $remote_path"
  echo "handoff: $server: $APP_ENV_PATH updated (mode 0600)"
  if [[ -n ${APP_RESTART_COMMAND:-} ]]; then
    ssh "${ssh_options[@]}" "$server" "$APP_RESTART_COMMAND"
    echo "handoff: $server: restarted ($APP_RESTART_COMMAND)"
  fi
done
rm -f "$work/outputs.json" "$work/.env.production"
if [[ -z ${APP_RESTART_COMMAND:-} ]]; then
  echo "handoff: restart Mastodon's services to load the new values (APP_RESTART_COMMAND unset)"
fi
