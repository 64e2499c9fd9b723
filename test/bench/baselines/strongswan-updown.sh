#!/bin/sh
# updown hook of the strongSwan failover baseline: when the CHILD_SA to one gateway goes down (dead-peer
# detection gave up and cleared it), bring up the connection to the other gateway.
# Arguments: <vici uri> <switch log>. charon sets PLUTO_VERB and PLUTO_CONNECTION (the child's name).
vici="$1"
log="$2"
# The bench stops the hook before it stops charon, so an orderly shutdown does not start the other side.
[ -e "$log.stop" ] && exit 0
case "$PLUTO_VERB" in
  down-client|down-host) ;;
  *) exit 0 ;;
esac
case "$PLUTO_CONNECTION" in
  gw1) next=gw2 ;;
  gw2) next=gw1 ;;
  *) exit 0 ;;
esac
echo "$(date +%s%3N) $PLUTO_CONNECTION $next" >> "$log"
# In the background: charon waits for this hook, and the initiation needs charon.
/usr/sbin/swanctl --initiate --child "$next" --uri "$vici" --timeout 10 >/dev/null 2>&1 &
exit 0
