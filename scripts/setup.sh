#!/usr/bin/env bash
# Installs what Detour needs on Debian 12, as root, and is safe to run again: the Debian packages of the
# engines and the lab, then the npm dependencies. Packaged services (ocserv, strongSwan, sshd, Prometheus, PostgreSQL) are
# kept from starting in the root namespace: the lab runs every engine and server in its own namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  wireguard-go wireguard-tools                       # WireGuard engine + wg (lab gateways, plain baseline)
  strongswan-swanctl charon-systemd                  # IKEv2 engine, driven over VICI
  libcharon-extra-plugins libstrongswan-extra-plugins  # kernel-libipsec (userspace ESP), curve25519
  ocserv openconnect gnutls-bin                      # AnyConnect server + client, certtool
  nftables iptables iproute2 iputils-ping procps     # namespaces, impairments, kill switch
  dnsmasq-base                                       # the lab's DNS (binary only, no service)
  libnetfilter-queue-dev gcc libc6-dev               # builds delayq, the lab's NFQUEUE delay tool
  python3 make g++                                   # node-gyp builds better-sqlite3 (the collector's store)
  chromium                                           # browser tests (playwright-core drives /usr/bin/chromium)
  openssh-server                                     # the lab's SFTP drop for diagnostic bundles (sshd only in a namespace)
  prometheus                                         # the fleet-monitoring test scrapes the collector (only in a namespace)
  postgresql                                         # the collector replicas' shared database (a private cluster, only in a namespace)
  systemd dbus-daemon                                # busctl (detourd's resolved client), the DNS test's private bus
  python3-dbus                                       # the sleep test's stand-in logind (owns org.freedesktop.login1, emits PrepareForSleep)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages with apt-get)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Debian's invoke-rc.d asks this hook before starting a freshly installed service; 101 means "do not".
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# On a host booted with systemd, make sure the packaged daemons never run in the root namespace.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for unit in ocserv.service ocserv.socket strongswan.service strongswan-starter.service; do
    if systemctl list-unit-files "$unit" >/dev/null 2>&1; then systemctl disable --now "$unit" >/dev/null 2>&1 || true; fi
  done
  # sshd only when this run installed it: a host that already had it may be reached through it.
  if printf '%s\n' "${missing[@]}" | grep -qx openssh-server; then
    systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
  # Prometheus likewise: the lab runs its own in a namespace; a host's existing one is left as it is.
  if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  # PostgreSQL likewise: the package makes a "main" cluster that policy-rc.d kept from starting; the lab initdb's
  # its own clusters in its run folder and never uses that one.
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql; then
    systemctl disable --now postgresql.service >/dev/null 2>&1 || true
  fi
fi

# systemd-resolved for the DNS lab test, unpacked but not installed: installing the package would turn the host's
# /etc/resolv.conf into a link to resolved's stub. The lab runs the binary only in its client namespace, on a
# private bus (test/lab/resolved.lab.test.ts).
RESOLVED_DIR=/var/cache/detour-lab/systemd-resolved
if [ ! -x "$RESOLVED_DIR/lib/systemd/systemd-resolved" ]; then
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download -q systemd-resolved >/dev/null 2>&1); then
    apt-get update -q
    (cd "$tmp" && apt-get download -q systemd-resolved)
  fi
  mkdir -p "$RESOLVED_DIR"
  dpkg-deb -x "$tmp"/systemd-resolved_*.deb "$RESOLVED_DIR"
  rm -rf "$tmp"
fi

# npm dependencies: reinstall only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # electron is a devDependency for its typings only: its binary cannot be downloaded on these machines.
  ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
echo "setup: ready"
