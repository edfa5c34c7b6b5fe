#!/usr/bin/env python3
"""Keeps the admins' SSH keys in the login user's authorized_keys, in a block of its own: how
keys are rotated on droplets whose `ssh_keys` only count at creation (and on existing hosts).
Lines outside the block (the keys DigitalOcean put there at creation, the stack's own) are left
as they are; an empty list empties the block.

stdin (JSON): AuthorizedKeysParams (mastodon_data/host_params.py): ssh_user (the login user),
authorized_keys (OpenSSH public key lines "<type> <base64>").
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from common import HostError, main_wrapper, read_params, replace_managed_block, write_if_changed

KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def login_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise HostError(f"no user {name!r} on this host") from None


def main() -> dict:
    params = read_params()
    keys = [" ".join(str(k).split()[:2]) for k in params["authorized_keys"]]
    bad = [k[:30] for k in keys if not k.startswith(KEY_TYPES) or len(k.split()) != 2]
    if bad:
        raise HostError(f"not OpenSSH public keys: {bad}")
    user = login_user(params["ssh_user"])
    path = Path(user.pw_dir) / ".ssh" / "authorized_keys"
    text = path.read_text() if path.exists() else ""
    changed = write_if_changed(path, replace_managed_block(text, keys), mode=0o600)
    for item, mode in ((path.parent, 0o700), (path, 0o600)):  # sshd refuses wider modes
        os.chown(item, user.pw_uid, user.pw_gid)
        item.chmod(mode)
    return {"role": "authorized_keys", "changed": ["authorized_keys written"] if changed else [],
            "keys": len(keys)}  # fmt: skip


if __name__ == "__main__":
    main_wrapper(main)
