#!/bin/sh
# openconnect --script for Detour: configures nothing on the system and only hands the variables openconnect
# passes back to the driver, appended as one record to the file named by $DETOUR_HANDBACK.
#
# Record: "detour-handback-1 " + hex of NUL-terminated KEY=value entries + newline. Environment values cannot
# hold NUL and hex holds no separator, so no value (hostile or not) can break the framing.
# The count of split includes is checked and capped, so a hostile count cannot make this loop long.

out=${DETOUR_HANDBACK-}
[ -n "$out" ] || exit 0

n=${CISCO_SPLIT_INC-0}
case $n in
  '' | *[!0-9]* | ????*) n=0 ;;
esac
[ "$n" -le 64 ] || n=64

{
  printf 'detour-handback-1 '
  {
    for k in reason TUNDEV INTERNAL_IP4_ADDRESS INTERNAL_IP4_NETMASK INTERNAL_IP4_NETMASKLEN INTERNAL_IP4_MTU \
      INTERNAL_IP4_DNS CISCO_DEF_DOMAIN VPNGATEWAY CISCO_SPLIT_INC; do
      eval "v=\${$k-}"
      printf '%s=%s\000' "$k" "$v"
    done
    i=0
    while [ "$i" -lt "$n" ]; do
      eval "a=\${CISCO_SPLIT_INC_${i}_ADDR-}"
      eval "m=\${CISCO_SPLIT_INC_${i}_MASKLEN-}"
      printf 'CISCO_SPLIT_INC_%s_ADDR=%s\000CISCO_SPLIT_INC_%s_MASKLEN=%s\000' "$i" "$a" "$i" "$m"
      i=$((i + 1))
    done
  } | od -An -v -tx1 | tr -d ' \n'
  printf '\n'
} >>"$out" 2>/dev/null

exit 0
