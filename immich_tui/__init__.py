"""Operator tools over the same core: services, the Textual app and the kubectl plugin."""
