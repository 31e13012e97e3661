"""The embedded sandbox behind `immich-tui --demo` and `make demo`, and the world the tests stand on.

A Kubernetes API emulator (kmock) seeded with the CronJob, its Jobs, the Immich server pod and a CNPG
cluster; a local S3 (moto) on 127.0.0.1; a generated Immich library; and small controllers that make a
triggered Job really run `immich-sync`. It needs the `demo` extra (`pip install
'immich-offsite-backup[demo]'`) and nothing else in the package imports it.
"""

DEMO_EXTRA_HINT = "pip install 'immich-offsite-backup[demo]'"


def missing_packages() -> list[str]:
    """The demo extra's packages that cannot be imported; checked before the sandbox is started."""
    import importlib

    missing = []
    for name in ("kmock", "moto"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing
