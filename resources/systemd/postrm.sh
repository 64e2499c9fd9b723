#!/bin/sh
# The deb's post-removal step: stop and remove detourd's unit and the `detour` command (its state in
# /var/lib/detour stays until purge).
set -e
systemctl disable --now detourd.service 2>/dev/null || true
rm -f /lib/systemd/system/detourd.service /usr/bin/detour
systemctl daemon-reload || true
if [ "$1" = "purge" ]; then rm -rf /var/lib/detour; fi
