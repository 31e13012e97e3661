#!/bin/sh
# Ceph RGW for the conformance suite, from Debian's packages (about 60 MB). Installed when missing and
# this is root on Debian; otherwise one line says exactly what to install, and the exit code is 2.
set -eu
PACKAGES="radosgw ceph-mon ceph-osd"
missing=""
for tool in ceph-mon ceph-osd radosgw monmaptool ceph-authtool ceph radosgw-admin; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; }
    exit 0
fi
echo "make conformance: Ceph RGW is missing ($missing ): install Debian's packages as root: apt-get install --no-install-recommends $PACKAGES" >&2
exit 2
