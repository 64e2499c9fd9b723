#!/bin/sh
# The deb's post-removal step: stop and remove detourd's units and the `detour` command (its state in
# /var/lib/detour stays until purge). On an upgrade nothing is removed: the new postinst installs and restarts.
# detourd keeps its kill switch when it stops under lockdown, so a removed Detour takes its table with it:
# otherwise the machine would stay blocked with nothing left to lift the block.
set -e
case "$1" in
  remove | purge)
    systemctl disable --now detourd.service 2>/dev/null || true
    systemctl disable detour-early-block.service 2>/dev/null || true
    rm -f /lib/systemd/system/detourd.service /lib/systemd/system/detour-early-block.service /usr/bin/detour
    systemctl daemon-reload || true
    nft delete table inet detour_killswitch 2>/dev/null || true
    ;;
esac
if [ "$1" = "purge" ]; then rm -rf /var/lib/detour; fi
