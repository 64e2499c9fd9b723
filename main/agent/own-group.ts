/**
 * detourd's own group: detourd switches its process to a dedicated group id at start, its engines (wireguard-go,
 * charon, openconnect) inherit it, and the kill switch binds its underlay allowances (gateway endpoints,
 * discovery and own resolvers) to sockets of that group (`meta skgid`), so no other local process can use them
 * as a way out of a blocked machine.
 *
 * Why the group and not a mark or a cgroup: Node cannot set SO_MARK on its sockets, and openconnect has no
 * fwmark option; nft 1.0.6 resolves `socket cgroupv2` paths under /sys/fs/cgroup, which on a hybrid layout (this
 * machine) is the v1 tree, and a cgroup needs detourd to manage its own hierarchy. A gid works the same on every
 * systemd or non-systemd Linux, needs CAP_SETGID only once at start, and no engine changes it (none of the
 * engines' configurations set charon.group or openconnect -U). The group has no members, so no user can take
 * it with newgrp or sg; root can, as root can remove any rule.
 */
import { resolveGroup } from "./control-server.ts";

/** Created by the package's post-install step (resources/systemd/postinst.sh). */
export const DEFAULT_OWN_GROUP = "detour-net";

/** The gid for `spec` (a group name listed in `groupFile`, or a number); throws naming what is wrong. */
export function ownGroupId(spec: string, groupFile = "/etc/group"): number {
  const gid = /^\d+$/.test(spec) ? Number(spec) : resolveGroup(spec, groupFile);
  if (gid === null)
    throw new Error(
      `--own-group: no group "${spec}" in ${groupFile} (the package creates "${DEFAULT_OWN_GROUP}"; or pass a gid)`,
    );
  if (gid === 0 || gid >= 2 ** 32 - 1)
    throw new Error(
      `--own-group: ${spec} (gid ${String(gid)}) cannot tell detourd's traffic from other processes; use a dedicated group`,
    );
  return gid;
}

/** Switches this process (and every child it starts from now on) to `gid`; throws if the system refuses. */
export function adoptOwnGroup(gid: number): void {
  const { setgid } = process;
  if (setgid === undefined) throw new Error("this platform cannot switch a process's group");
  try {
    setgid(gid);
  } catch (err) {
    throw new Error(`cannot switch to its own group ${String(gid)}: ${(err as Error).message}`, { cause: err });
  }
  if (process.getgid?.() !== gid || process.getegid?.() !== gid)
    throw new Error(`switching to its own group ${String(gid)} did not take effect`);
}
