"""The backup repository's place (droplets and hosts mode). Droplets mode: a Spaces bucket for
backups alone, private, kept when the stack goes (`retain_on_delete`: a backup must outlive the
servers and the stack it came from; a new stack restores from it), and a Spaces key whose only
grant is this bucket. Hosts mode: an existing bucket and key from the settings."""

from __future__ import annotations

import pulumi

from mastodon_data.config import BACKUP_SECRET_KEY, BackupSettings
from mastodon_data.naming import do_name


class BackupRepository(pulumi.ComponentResource):
    """`key_id` and `key_secret` (secret): the repository's key, for the backup steps and
    `mastodon-data restore`; `output`: the stack output `backups` (no secret in it)."""

    def __init__(
        self,
        name: str,
        backups: BackupSettings,
        key_secret: pulumi.Output | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:BackupRepository", name, None, opts)
        self.bucket = self.key = None
        if backups.make_bucket:
            self._make_bucket(name, backups)
        else:
            self.key_id = pulumi.Output.from_input(backups.backup_access_key_id)
            self.key_secret = pulumi.Output.secret(key_secret)
        self.output = {
            "endpoint": backups.backup_endpoint,
            "bucket": self.bucket.name if self.bucket else backups.backup_bucket,
            "region": backups.backup_region,
            "path": backups.backup_path,
            "ca_cert": backups.backup_ca_cert,
            "stanza": backups.stanza,
            "retention_full": backups.backup_retention_full,
            "retention_diff": backups.backup_retention_diff,
            "schedule_full": backups.backup_full_schedule,
            "schedule_diff": backups.backup_diff_schedule,
        }
        self.register_outputs({})

    @classmethod
    def with_key(
        cls, name: str, backups: BackupSettings | None, secrets: dict[str, pulumi.Output]
    ) -> tuple[BackupRepository | None, dict[str, pulumi.Output]]:
        """(the repository or None, `secrets` with the repository's key added): the key reaches
        the backup steps on stdin with the other secrets."""
        if backups is None:
            return None, secrets
        repository = cls(name, backups, secrets.get(BACKUP_SECRET_KEY))
        key = {"backupAccessKeyId": repository.key_id, BACKUP_SECRET_KEY: repository.key_secret}
        return repository, {**secrets, **key}

    @property
    def key_output(self) -> pulumi.Output:
        """The stack output `backup_key` (secret): restoring on a new server needs it, and in
        droplets mode the key exists nowhere else."""
        key = {"access_key_id": self.key_id, "secret_access_key": self.key_secret}
        return pulumi.Output.secret(key)

    def _make_bucket(self, name: str, backups: BackupSettings) -> None:
        import pulumi_digitalocean as do  # here: hosts mode never loads it (~0.3 s an `up`)

        child = pulumi.ResourceOptions(parent=self)
        self.bucket = do.SpacesBucket(
            f"{name}-bucket",
            name=backups.backup_bucket,
            region=backups.backup_region,
            acl="private",
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        # Read and write on this bucket only, apart from the media key: a leaked media key
        # cannot touch the backups, nor this one the media.
        self.key = do.SpacesKey(
            f"{name}-key",
            name=f"{do_name('mastodon-data', pulumi.get_stack())}-backups",
            grants=[do.SpacesKeyGrantArgs(bucket=self.bucket.name, permission="readwrite")],
            opts=child,
        )
        self.key_id = self.key.access_key
        self.key_secret = pulumi.Output.secret(self.key.secret_key)
