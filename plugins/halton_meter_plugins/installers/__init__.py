"""Platform installer plugins: exactly one answers `halton_platform_installer` for a given platform.

* `systemd`: Linux with a systemd user manager.
* `builtin`: anywhere without a service manager (containers, WSL without systemd): a detached supervisor.
* `launchd`: macOS.
* `windows`: Task Scheduler, per-user certificate store, HKCU environment and proxy settings.

Their conditions do not overlap, so no ordering between them is ever needed.
"""
