#!/bin/sh
# promtool (Prometheus's rule checker and rule unit-test runner) for tests/test_alerts.py, into the virtualenv's
# bin directory (the argument, default .venv/bin). No Python package ships it; Debian's `prometheus` package
# does, so its .deb is fetched with apt-get and only /usr/bin/promtool is taken out of it: installing the
# package would also install a Prometheus server, which some machines start right away. A promtool already
# on PATH is used as it is. Without apt-get, one line says what to install, and the exit code is 2.
set -eu
BIN=$(cd "${1:-.venv/bin}" && pwd)
[ -x "$BIN/promtool" ] && exit 0
if found=$(command -v promtool 2>/dev/null); then
    ln -sf "$found" "$BIN/promtool"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "make test: promtool is missing: install Prometheus's promtool on PATH (Debian, Ubuntu: apt-get install prometheus)" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
cd "$work"
# apt-get download needs the package lists; a fresh machine has none until `apt-get update` (root only).
if ! apt-get download prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "make test: promtool is missing and apt-get cannot fetch Debian's prometheus package: run 'apt-get update' as root, or install promtool on PATH" >&2
        exit 2
    fi
    apt-get update -qq >/dev/null
    apt-get download prometheus >/dev/null 2>&1 || {
        echo "make test: promtool is missing and 'apt-get download prometheus' failed: install promtool on PATH" >&2
        exit 2
    }
fi
dpkg-deb -x prometheus_*.deb extracted
install -m 0755 extracted/usr/bin/promtool "$BIN/promtool"
