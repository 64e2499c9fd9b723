#!/bin/sh
# The deb's post-install step: the "detour" group that may use detourd's socket, the `detour` command (the
# bundled CLI, run by the system's Node), then the units. The early-boot block is enabled for the next boot but
# never started here: detourd's own table may be in force, and the early one would replace it with a plain block.
# detourd is restarted, so an upgrade runs the new code (under lockdown it keeps its table across the restart).
set -e
getent group detour >/dev/null || groupadd --system detour
# detourd's own group, without members: detourd and its engines run as it, and the kill switch lets only its
# sockets use the gateway endpoints and resolvers while it blocks (main/agent/own-group.ts).
getent group detour-net >/dev/null || groupadd --system detour-net
printf '#!/bin/sh\nexec /usr/bin/node /opt/Detour/resources/detourd/detour.mjs "$@"\n' > /usr/bin/detour
chmod 0755 /usr/bin/detour
install -m 0644 /opt/Detour/resources/systemd/detourd.service /lib/systemd/system/detourd.service
install -m 0644 /opt/Detour/resources/systemd/detour-early-block.service /lib/systemd/system/detour-early-block.service
systemctl daemon-reload || true
systemctl enable detour-early-block.service detourd.service || true
systemctl restart detourd.service || true
