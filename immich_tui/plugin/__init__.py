"""`kubectl immich-backup`: the services on the command line, for operators, scripts and monitoring."""
