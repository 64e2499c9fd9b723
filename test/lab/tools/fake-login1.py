#!/usr/bin/python3
"""A stand-in logind for the sleep lab test: owns org.freedesktop.login1 on the bus at argv[1] ("owner") or only
connects to it ("impostor"), and emits org.freedesktop.login1.Manager.PrepareForSleep(true) on SIGUSR1 and
PrepareForSleep(false) on SIGUSR2, as logind does before a suspend and after the resume. SIGTERM ends it.
Debian's python3-dbus (scripts/setup.sh): the only D-Bus client here that can hold a name while emitting."""
import signal
import sys

import dbus
import dbus.lowlevel

address, role = sys.argv[1], sys.argv[2]
bus = dbus.bus.BusConnection(address)
if role == "owner":
    reply = bus.request_name("org.freedesktop.login1", dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    if reply != dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        print(f"could not own org.freedesktop.login1 (reply {reply})", flush=True)
        sys.exit(1)
print(f"{role} {bus.get_unique_name()}", flush=True)


def emit(sleeping):
    m = dbus.lowlevel.SignalMessage("/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep")
    m.append(dbus.Boolean(sleeping))
    bus.send_message(m)
    bus.flush()
    print(f"sent PrepareForSleep({'true' if sleeping else 'false'})", flush=True)


signal.signal(signal.SIGUSR1, lambda *_: emit(True))
signal.signal(signal.SIGUSR2, lambda *_: emit(False))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
