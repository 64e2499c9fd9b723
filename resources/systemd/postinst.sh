#!/bin/sh
# The deb's post-install step: the "detour" group that may use detourd's socket, then the service.
set -e
getent group detour >/dev/null || groupadd --system detour
install -m 0644 /opt/Detour/resources/systemd/detourd.service /lib/systemd/system/detourd.service
systemctl daemon-reload || true
systemctl enable --now detourd.service || true
