"""`kubectl immich-backup`: the services on the command line, for operators, scripts and monitoring."""

PROG = "kubectl immich-backup"  # how kubectl users type it, and how every usage and error line names it
