"""Headless, append-only, verified media sync of an Immich library to S3.

This package is all the CronJob image installs: it must not import textual or kubernetes.
"""

__version__ = "0.1.0"
