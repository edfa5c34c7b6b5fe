"""Server certificates renew themselves, through the real engine on a lab of its own: after an
`up`, the primary's and a replica's certificates are re-issued on their hosts with 5 days left
(a test-only openssl command over SSH); a plain `pulumi up` with nothing else changed renews
both (reload, no restart), keeps the CA (so `postgres_ca_cert` and NODE_EXTRA_CA_CERTS stay),
and the replicas stream again with verify-full after their connections are cut; the next `up`
reports only `same`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from labkit import new_secrets, own_lab, wait_until, write_figures

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from mastodon_data import cert_renewal
from mastodon_data.config import Host

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = lab_hosts.Lab(
    prefix="mlc", subnet="10.232.0.0/24", state_dir=Path("/var/lib/mastodon-lab-cert")
)
STEPS = 15  # the stack, the ReplicationSteps component, primary + 2 replicas, the slots step,
# 3 status reports, 3 pooler steps, 3 health endpoint steps
CONF = "/etc/postgresql/15/main"
CA = "/etc/postgresql/mastodon-data-ca"
DAY = 86400


def ssh(index: int, command: str, check: bool = True) -> str:
    argv = LAB.ssh_command(LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} on h{index}: {result.stderr}")
    return result.stdout.strip()


def psql(index: int, sql: str) -> str:
    return ssh(index, f"runuser -u postgres -- psql -X -A -t -d postgres -c {json.dumps(sql)}")


def seconds_left(index: int, pem_source: str = f"{CONF}/server.crt") -> int:
    """Seconds until the certificate's end, by the host's clock (openssl's own date math)."""
    end = ssh(index, f"openssl x509 -in {pem_source} -noout -enddate").removeprefix("notAfter=")
    now = int(ssh(index, "date +%s"))
    return int(ssh(index, f"date -d {json.dumps(end)} +%s")) - now


def served_certificate(index: int) -> str:
    """The certificate the running server presents on its address (TLS after the PostgreSQL
    SSLRequest), in PEM, fetched from the operator's side."""
    address = LAB.host(index).address
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "postgres", "-connect", f"{address}:5432"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = result.stdout
    return out[out.index("-----BEGIN CERTIFICATE-----") : out.index("-----END CERTIFICATE-----")]


def near_its_end(index: int, ca_signed: bool) -> None:
    """Test only: the host's server certificate issued again, same key, valid 5 days."""
    address = LAB.host(index).address
    san = f"subjectAltName=IP:{address}"
    if ca_signed:
        command = (
            f"cd /tmp && openssl req -new -key {CONF}/server.key -subj /CN={address} -out t.csr"
            f" && printf '{san}\\nextendedKeyUsage=serverAuth\\n' > t.ext"
            f" && openssl x509 -req -in t.csr -CA {CA}/ca.crt -CAkey {CA}/ca.key -days 5"
            f" -extfile t.ext -out {CONF}/server.crt && rm t.csr t.ext"
        )
    else:
        command = (
            f"openssl req -x509 -key {CONF}/server.key -subj /CN={address} -days 5"
            f" -addext {san} -out {CONF}/server.crt"
        )
    ssh(index, command)
    ssh(index, "pg_ctlcluster 15 main reload")  # the server presents the short one


def renewals(index: int) -> str:
    return ssh(index, f"cat {CONF}/mastodon-data-renewals 2>/dev/null || echo none")


def streaming_verify_full(replica: int) -> bool:
    row = psql(replica, "SELECT status, conninfo FROM pg_stat_wal_receiver")
    return row.startswith("streaming|") and "sslmode=verify-full" in row


def app_verifies(ca_pem: str, secrets: dict, tmp: Path) -> str:
    """What a client that trusts only `postgres_ca_cert` (the streaming server with
    NODE_EXTRA_CA_CERTS) sees: a verify-full connection to the primary as Mastodon's role."""
    ca_file = tmp / "postgres-ca.crt"
    ca_file.write_text(ca_pem)
    with psycopg.connect(
        host=LAB.host(1).address, dbname="mastodon_production", user="mastodon",
        password=secrets["dbPassword"], sslmode="verify-full", sslrootcert=str(ca_file),
        connect_timeout=10,
    ) as connection:  # fmt: skip
        return connection.execute(
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()[0]


def timed_up(stack: LabStack) -> float:
    start = time.monotonic()
    stack.up()
    return round(time.monotonic() - start, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with own_lab(LAB, 3):
        secrets = new_secrets(LAB)
        stack = LabStack("certs", tmp_path_factory.mktemp("certs") / "stack")
        stack.prepare()
        stack.configure(lab_hosts.stack_config(LAB, 2, 3), secrets)
        figures = {"first up s": timed_up(stack)}
        yield {"stack": stack, "secrets": secrets, "figures": figures}
        write_figures("cert_renewal", figures)


def test_fresh_certificates_are_not_renewed_and_an_up_changes_nothing(run):
    stack, figures = run["stack"], run["figures"]
    for index in (1, 2, 3):
        assert 824 * DAY < seconds_left(index) <= 825 * DAY
        assert renewals(index) == "none"
    figures["no-change up s"] = timed_up(stack)
    assert stack.last_changes() == {"same": STEPS}
    # What the check itself costs: one read-only ssh round trip per host (run in parallel).
    key = run["secrets"]["sshPrivateKey"]
    start = time.monotonic()
    for index in (1, 2, 3):
        lab_host = LAB.host(index)
        host = Host(lab_host.name, "replica", lab_host.address, lab_host.address,
                    host_key=lab_hosts.host_key(lab_host))  # fmt: skip
        answer = cert_renewal.read_over_ssh(
            host, lab_host.address, key, cert_renewal.probe_command(15, 30)
        )
        assert answer == "ok 0"
    figures["one certificate probe over ssh s"] = round((time.monotonic() - start) / 3, 3)


def test_a_certificate_near_its_end_is_renewed_by_a_plain_up(run, tmp_path):
    stack, figures = run["stack"], run["figures"]
    ca_before = stack.outputs()["postgres_ca_cert"]
    started = {i: psql(i, "SELECT pg_postmaster_start_time()") for i in (1, 2, 3)}
    near_its_end(1, ca_signed=True)  # the primary: signed by the stack's CA
    near_its_end(2, ca_signed=False)  # a replica: its own, self-signed
    short = {i: served_certificate(i) for i in (1, 2)}
    for index in (1, 2):
        assert seconds_left(index) <= 5 * DAY

    preview = stack.preview()
    assert "mlc-h1: server certificate within 30 days of its end" in preview
    assert "mlc-h2: server certificate within 30 days of its end" in preview
    assert "mlc-h3: server certificate within" not in preview

    figures["renewing up s"] = timed_up(stack)
    for index in (1, 2):
        assert 824 * DAY < seconds_left(index) <= 825 * DAY  # renewed for certificateDays
        assert renewals(index) == "1"
        served = served_certificate(index)
        assert served != short[index]  # a reload made the server present the new one ...
        assert served in ssh(index, f"cat {CONF}/server.crt")
    assert renewals(3) == "none"  # ... and h3's, not due, was left alone
    assert {i: psql(i, "SELECT pg_postmaster_start_time()") for i in (1, 2, 3)} == started
    assert stack.outputs()["postgres_ca_cert"] == ca_before  # same CA: NODE_EXTRA_CA_CERTS stays
    assert app_verifies(ca_before, run["secrets"], tmp_path) == "true"
    ssh(1, f"openssl verify -CAfile {CA}/ca.crt {CONF}/server.crt")

    # New connections verify the renewed certificate: cut both replicas' connections.
    psql(1, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    for replica in (2, 3):
        wait_until(lambda r=replica: streaming_verify_full(r), 30, f"h{replica} streaming")
    wait_until(
        lambda: psql(1, "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s "
                        "USING (pid) WHERE s.ssl AND r.state = 'streaming'") == "2",
        30,
        "both replicas streaming over TLS",
    )  # fmt: skip


def test_the_next_up_changes_nothing(run):
    stack, figures = run["stack"], run["figures"]
    stack.preview("--expect-no-changes")
    figures["no-change up after renewal s"] = timed_up(stack)
    assert stack.last_changes() == {"same": STEPS}
    for index in (1, 2):
        assert renewals(index) == "1"


def pem_count(text: str) -> int:
    return text.count("-----BEGIN CERTIFICATE-----")


def reconnected_with_verify_full() -> None:
    """The replicas' connections cut on the primary; both stream again, verifying fully."""
    psql(1, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    for replica in (2, 3):
        wait_until(lambda r=replica: streaming_verify_full(r), 30, f"h{replica} streaming")


def rotated(stack: LabStack, stage: str, secrets: dict) -> str:
    """`pulumi up` with caRotation `stage`; the postgres_ca_cert output after it."""
    stack.configure({**lab_hosts.stack_config(LAB, 2, 3), "caRotation": stage}, secrets)
    stack.up()
    ca = stack.outputs()["postgres_ca_cert"]
    for replica in (2, 3):  # the replicas trust exactly what the output says
        assert ssh(replica, "cat /var/lib/postgresql/primary-ca.crt") == ca.strip()
    reconnected_with_verify_full()
    return ca


def test_ca_rotation_hands_over_in_three_ups(run, tmp_path):
    stack, secrets = run["stack"], run["secrets"]
    old = stack.outputs()["postgres_ca_cert"]
    assert pem_count(old) == 1
    prepared = rotated(stack, "prepare", secrets)
    assert pem_count(prepared) == 2 and prepared.startswith(old)  # both trusted, old signs
    ssh(1, f"openssl verify -CAfile {CA}/ca.crt {CONF}/server.crt")
    new = prepared.removeprefix(old)
    switched = rotated(stack, "switch", secrets)
    assert switched == new + old  # the new one signs, the old one is still trusted
    assert ssh(1, f"cat {CA}/ca.crt") == new.strip()
    ssh(1, f"openssl verify -CAfile {CA}/ca.crt {CONF}/server.crt")  # issued again by the new
    assert renewals(1) == "1"  # a rotation is no renewal
    done = rotated(stack, "none", secrets)
    assert done == new
    assert app_verifies(new, secrets, tmp_path) == "true"
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        app_verifies(old, secrets, tmp_path)  # the old CA alone no longer does
    stack.up()
    assert stack.last_changes() == {"same": STEPS}
