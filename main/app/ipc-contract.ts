/**
 * The one validated bridge between the page and the app: every call from the renderer (Electron IPC through the
 * preload, or HTTP through the dev bridge) names a call from APP_CHANNELS and passes its arguments as an array,
 * which are checked here with zod before anything runs. Anything else is refused as "invalid".
 */
import { z } from "zod";
import {
  APP_CHANNELS,
  PREFERENCE_KEYS,
  type AppCall,
  type AppFailure,
  type AppResult,
  type DetourApi,
} from "../core/protocol/app-api.ts";
import { PREFERENCE_SCHEMAS } from "./settings-model.ts";

/** The host's side of the API: the page's calls without the update subscription. */
export type AppHostApi = Omit<DetourApi, "onUpdate">;

/** Longest path accepted for a diagnostics upload: PATH_MAX on Linux. */
const MAX_PATH = 4096;

const none = z.tuple([]);
const ARG_SCHEMAS = {
  status: none,
  gateways: none,
  connect: none,
  disconnect: none,
  history: none,
  setGateway: z.tuple([z.string().min(1).max(253).nullable()]),
  settings: none,
  setSetting: z.tuple([z.enum(PREFERENCE_KEYS as [string, ...string[]]), z.unknown()]),
  createDiagnostics: none,
  uploadDiagnostics: z.tuple([z.string().min(1).max(MAX_PATH)]),
  openSignIn: none,
} satisfies { [K in AppCall]: z.ZodType };

/** A call checked against the contract: its name and its arguments, typed. */
export type ValidCall = { [K in AppCall]: { call: K; args: Parameters<AppHostApi[K]> } }[AppCall];

const CALL_BY_CHANNEL = new Map<string, AppCall>(
  Object.entries(APP_CHANNELS).map(([call, channel]) => [channel, call as AppCall]),
);

/** The call a channel name stands for, or null for a channel outside the contract. */
export function callForChannel(channel: string): AppCall | null {
  return CALL_BY_CHANNEL.get(channel) ?? null;
}

function invalid(message: string): AppFailure {
  return { ok: false, code: "invalid", message };
}

/** Checks a call name and its raw arguments. A setting's value is checked against that setting's own schema. */
export function validateCall(call: unknown, args: unknown): { ok: true; value: ValidCall } | AppFailure {
  if (typeof call !== "string" || !Object.hasOwn(APP_CHANNELS, call))
    return invalid(`unknown call ${typeof call === "string" ? JSON.stringify(call.slice(0, 60)) : typeof call}`);
  const name = call as AppCall;
  const parsed = ARG_SCHEMAS[name].safeParse(args);
  if (!parsed.success)
    return invalid(
      `${name}: ${parsed.error.issues.map((i) => `${i.path.join(".") || "arguments"}: ${i.message}`).join("; ")}`.slice(
        0,
        500,
      ),
    );
  if (name === "setSetting") {
    const [key, value] = parsed.data as [keyof typeof PREFERENCE_SCHEMAS, unknown];
    const v = PREFERENCE_SCHEMAS[key].safeParse(value);
    if (!v.success)
      return invalid(`setSetting: ${key}: ${v.error.issues.map((i) => i.message).join("; ")}`.slice(0, 500));
    return { ok: true, value: { call: "setSetting", args: [key, v.data] } as ValidCall };
  }
  return { ok: true, value: { call: name, args: parsed.data } as ValidCall };
}

/**
 * Validates and runs one call on the host. Never rejects: a host that throws (a bug) becomes an "internal"
 * failure, so the page always gets a value it can show.
 */
export async function invokeCall(host: AppHostApi, call: unknown, args: unknown): Promise<AppResult<unknown>> {
  const v = validateCall(call, args);
  if (!v.ok) return v;
  try {
    const c = v.value;
    switch (c.call) {
      case "status":
        return await host.status();
      case "gateways":
        return await host.gateways();
      case "connect":
        return await host.connect();
      case "disconnect":
        return await host.disconnect();
      case "history":
        return await host.history();
      case "setGateway":
        return await host.setGateway(...c.args);
      case "settings":
        return await host.settings();
      case "setSetting":
        return await host.setSetting(...c.args);
      case "createDiagnostics":
        return await host.createDiagnostics();
      case "uploadDiagnostics":
        return await host.uploadDiagnostics(...c.args);
      case "openSignIn":
        return await host.openSignIn();
    }
  } catch (e) {
    return { ok: false, code: "internal", message: e instanceof Error ? e.message.slice(0, 500) : "the app failed" };
  }
}
