/**
 * DetourApi for the page when it runs in a browser against the dev bridge (main/app/dev-bridge.ts): calls are
 * JSON POSTs to /api/<call>, updates arrive on the /updates WebSocket. The token travels in the HttpOnly cookie
 * the bridge set when the page was opened, so no script here ever sees it.
 */
import type { AppResult, AppUpdate, DetourApi } from "../main/core/protocol/app-api.ts";

/** A dropped update socket (the bridge restarting) is retried after this long; the page polls meanwhile anyway. */
const RECONNECT_MS = 1000;

async function call<T>(name: string, args: unknown[]): Promise<AppResult<T>> {
  try {
    const r = await fetch(`/api/${name}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ args }),
      credentials: "same-origin",
    });
    if (!r.ok)
      return {
        ok: false,
        code: "bridge",
        message: `the bridge refused the call (${r.status}): ${(await r.text()).trim()}`,
      };
    return (await r.json()) as AppResult<T>;
  } catch (e) {
    return {
      ok: false,
      code: "bridge",
      message: `the bridge is not reachable: ${e instanceof Error ? e.message : String(e)}`,
    };
  }
}

export function bridgeApi(): DetourApi {
  const listeners = new Set<(u: AppUpdate) => void>();
  let socket: WebSocket | null = null;
  const open = (): void => {
    if (socket !== null || listeners.size === 0) return;
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/updates`);
    socket = ws;
    ws.addEventListener("message", (m: MessageEvent<string>) => {
      let u: AppUpdate;
      try {
        u = JSON.parse(m.data) as AppUpdate;
      } catch {
        return;
      }
      for (const l of listeners) l(u);
    });
    ws.addEventListener("close", () => {
      socket = null;
      setTimeout(open, RECONNECT_MS);
    });
  };
  return {
    status: () => call("status", []),
    gateways: () => call("gateways", []),
    connect: () => call("connect", []),
    disconnect: () => call("disconnect", []),
    history: () => call("history", []),
    setGateway: (gateway) => call("setGateway", [gateway]),
    settings: () => call("settings", []),
    setSetting: (key, value) => call("setSetting", [key, value]),
    createDiagnostics: () => call("createDiagnostics", []),
    uploadDiagnostics: (path) => call("uploadDiagnostics", [path]),
    openSignIn: () => call("openSignIn", []),
    onUpdate(listener) {
      listeners.add(listener);
      open();
      return () => {
        listeners.delete(listener);
      };
    },
  };
}
