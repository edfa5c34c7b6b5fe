"""Mastodon's own view of the database variables: the `production` section of its
config/database.yml, rendered the way Rails does (ERB over the environment, then YAML), and the
switch that turns the replica on (app/models/application_record.rb: `connects_to database:
{ writing: :primary, reading: ENV['REPLICA_DB_NAME'] || ENV['REPLICA_DATABASE_URL'] ?
:replica : :primary }`).

The `default` block and `primary` are Mastodon's (4.x, mastodon/mastodon config/database.yml);
`replica` follows the same file as Mastodon 4.4 ships it, each REPLICA_* falling back to the
primary's value as docs.joinmastodon.org/admin/scaling/#read-replicas documents
("REPLICA_PREPARED_STATEMENTS is an optional override for the PREPARED_STATEMENTS value. By
default it is set to true if PREPARED_STATEMENTS is not set"). Only the ERB forms this file uses
are evaluated: `ENV['X'] || ... || 'literal' || 5` chains and `( ... ).to_json`.
"""

from __future__ import annotations

import json
import re

import yaml

DATABASE_YML = """\
default: &default
  adapter: postgresql
  timeout: 5000
  connect_timeout: 15
  encoding: unicode
  sslmode: <%= ENV['DB_SSLMODE'] || "prefer" %>
  application_name: ''

production:
  primary:
    <<: *default
    database: <%= ENV['DB_NAME'] || 'mastodon_production' %>
    username: <%= ENV['DB_USER'] || 'mastodon' %>
    password: <%= (ENV['DB_PASS'] || '').to_json %>
    host: <%= ENV['DB_HOST'] || 'localhost' %>
    port: <%= ENV['DB_PORT'] || 5432 %>
    prepared_statements: <%= ENV['PREPARED_STATEMENTS'] || 'true' %>
  replica:
    <<: *default
    database: <%= ENV['REPLICA_DB_NAME'] || ENV['DB_NAME'] || 'mastodon_production' %>
    username: <%= ENV['REPLICA_DB_USER'] || ENV['DB_USER'] || 'mastodon' %>
    password: <%= (ENV['REPLICA_DB_PASS'] || ENV['DB_PASS'] || '').to_json %>
    host: <%= ENV['REPLICA_DB_HOST'] || ENV['DB_HOST'] || 'localhost' %>
    port: <%= ENV['REPLICA_DB_PORT'] || ENV['DB_PORT'] || 5432 %>
    prepared_statements: <%= ENV['REPLICA_PREPARED_STATEMENTS'] || ENV['PREPARED_STATEMENTS'] || 'true' %>
    replica: true
    database_tasks: <%= ENV['REPLICA_DB_TASKS'] || 'true' %>
"""  # noqa: E501 (Mastodon's lines, as they are)

ERB = re.compile(r"<%=\s*(.*?)\s*%>")
TERM = re.compile(r"""ENV\['(\w+)'\]|'([^']*)'|"([^"]*)"|(\d+)""")


def erb_value(expression: str, env: dict[str, str]) -> str:
    """Ruby's value of `a || b || ...` (nil falls through; '' does not), printed by ERB."""
    to_json = expression.startswith("(") and expression.endswith(").to_json")
    inner = expression[1 : -len(").to_json")] if to_json else expression
    value = None
    for term in (t.strip() for t in inner.split("||")):
        match = TERM.fullmatch(term)
        if not match:
            raise ValueError(f"ERB form not evaluated here: {term!r}")
        name, single, double, number = match.groups()
        value = (
            env.get(name) if name else next(v for v in (single, double, number) if v is not None)
        )
        if value is not None:
            break
    return json.dumps(value) if to_json else str(value)


def database_config(env: dict[str, str]) -> dict[str, dict]:
    """{"primary": ..., "replica": ... (only when Mastodon turns it on)} as Rails reads them."""
    rendered = ERB.sub(lambda m: erb_value(m.group(1), env), DATABASE_YML)
    production = yaml.safe_load(rendered)["production"]
    if not (env.get("REPLICA_DB_NAME") or env.get("REPLICA_DATABASE_URL")):
        del production["replica"]
    return production


def migration_environment(env: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """`set -a; . ./.env.migration; set +a` then Rails: the overrides are in the process's
    environment, and dotenv never replaces a variable already there."""
    return {**env, **overrides}


def read_dotenv(text: str) -> dict[str, str]:
    """A file render-env wrote, read as dotenv does (values plain or in single quotes)."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        values[name] = value[1:-1] if re.fullmatch(r"'.*'", value) else value
    return values
