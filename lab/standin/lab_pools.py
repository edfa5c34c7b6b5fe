"""A managed cluster's connection pools on its nodes (lab/standin/backend.py,
`DatabaseBackend.configure_pools`): this machine's PgBouncer on port 25061 of each node, TLS for
clients with the node's certificate, SCRAM passwords of the cluster's users, each pool a
`[databases]` entry in its mode and size logging in to the node's PostgreSQL as the pool's user.

The users' passwords are in a file of the postgres user's, mode 0600, written from stdin; the
configuration holds none.
"""

from __future__ import annotations

from lab.standin.lab_databases import PORT, TLS_DIR, LabDatabases

POOL_PORT = 25061
CONFIG = "/etc/pgbouncer/standin-pools.ini"
USERS = "/etc/pgbouncer/standin-users.txt"
PID = "/var/run/postgresql/standin-pgbouncer.pid"
SETTINGS = f"""[pgbouncer]
listen_addr = *
listen_port = {POOL_PORT}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {USERS}
pidfile = {PID}
logfile = /var/log/postgresql/standin-pgbouncer.log
client_tls_sslmode = require
client_tls_key_file = {TLS_DIR}/node.key
client_tls_cert_file = {TLS_DIR}/node.crt
server_tls_sslmode = require
max_client_conn = 5000
ignore_startup_parameters = extra_float_digits
"""
# Started when not running (with room for its clients' descriptors), else told to reload; gone
# when the cluster has no pool. $1: "start" or "stop".
RUN = f"""
pid=$(cat {PID} 2>/dev/null || true)
running=
if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = pgbouncer ]; then running=$pid; fi
if [ "$1" = stop ]; then
    [ -z "$running" ] || kill "$running"
elif [ -n "$running" ]; then
    kill -HUP "$running"
else
    ulimit -n 8192
    runuser -u postgres -- pgbouncer -d -q {CONFIG}
    for i in $(seq 50); do
        ss -Hltn 'sport = :{POOL_PORT}' | grep -q . && exit 0
        sleep 0.1
    done
    echo "pgbouncer does not listen on {POOL_PORT}" >&2
    exit 1
fi
"""


def pools_config(cluster: dict) -> str:
    """PgBouncer's configuration for the cluster's pools (no secret in it)."""
    entries = []
    for name, pool in cluster["pools"].items():
        login = f" user={pool['user']}" if pool["user"] else ""  # none: the client's own
        entries.append(
            f"{name} = host=127.0.0.1 port={PORT} dbname={pool['db']}{login} "
            f"pool_size={pool['size']} pool_mode={pool['mode']}\n"
        )
    return "[databases]\n" + "".join(entries) + "\n" + SETTINGS


class LabPools(LabDatabases):
    """PgBouncer on the nodes of managed database clusters."""

    def configure_pools(self, cluster: dict, node: dict) -> None:
        users = "".join(f'"{name}" "{u["password"]}"\n' for name, u in cluster["users"].items())
        action = "start" if cluster["pools"] else "stop"
        script = f"""
umask 077
cat > {USERS}
chown postgres:postgres {USERS}
cat > {CONFIG} <<'EOF'
{pools_config(cluster)}EOF
chown postgres:postgres {CONFIG}
set -- {action}
{RUN}"""
        self.node_run(node, script, stdin=users)
