#!/bin/sh
# openconnect --script for the lab's selftest: configures only the tun device openconnect opened, in the
# client namespace, from the variables it passes. It never touches /etc/resolv.conf (unlike vpnc-script).
case "$reason" in
  connect)
    ip link set dev "$TUNDEV" up mtu "${INTERNAL_IP4_MTU:-1300}"
    ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
    i=0
    while [ "$i" -lt "${CISCO_SPLIT_INC:-0}" ] && [ "$i" -lt 64 ]; do
      eval a=\$CISCO_SPLIT_INC_${i}_ADDR
      eval m=\$CISCO_SPLIT_INC_${i}_MASKLEN
      ip route replace "$a/$m" dev "$TUNDEV"
      i=$((i + 1))
    done
    ;;
  pre-init|disconnect|attempt-reconnect|reconnect) ;;
esac
exit 0
