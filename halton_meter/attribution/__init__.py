"""Who made a call: project (workspace files, git), branch, client tool, key fingerprint."""
