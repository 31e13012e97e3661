"""Cluster, S3 and CNPG state and actions, shared by the plugin and the TUI and free of any UI.

Every failure an operator can act on is a `ServiceError` (see `errors`), one line long.
"""
