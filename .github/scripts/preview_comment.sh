#!/usr/bin/env bash
# The pull-request comment for one stack: `pulumi preview` with the policy pack, exactly as the
# pull-request workflow runs it, wrapped in Markdown with a marker that lets the workflow edit
# its own comment on the next push. Secrets show as [secret] (Pulumi masks them).
#
#   bash .github/scripts/preview_comment.sh STACK OUT.md     # exit status: the preview's
set -uo pipefail
stack="$1" out="$2"
limit=60000 # GitHub refuses comments over 65,536 characters
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
pulumi preview --stack "$stack" --diff --suppress-outputs --non-interactive --color never \
  --policy-pack policy --policy-pack-config policy/config.json >"$log" 2>&1
status=$?
{
  echo "<!-- mastodon-data preview: $stack -->"
  if ((status == 0)); then
    echo "#### \`pulumi preview\` of \`$stack\`: passes the policy pack"
  else
    echo "#### \`pulumi preview\` of \`$stack\`: FAILED (exit $status)"
  fi
  echo
  echo '```diff'
  if (($(wc -c <"$log") > limit)); then
    head -c "$limit" "$log"
    echo
    echo "... (cut at $limit characters: the whole preview is in the job's log)"
  else
    cat "$log"
  fi
  echo '```'
} >"$out"
cat "$log"
exit "$status"
