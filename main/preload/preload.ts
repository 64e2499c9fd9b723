/**
 * The preload of the Detour window: exposes window.detour, the typed DetourApi, and nothing else. Each method
 * forwards its arguments on its own channel; the main process validates them (ipc-contract.ts). No ipcRenderer,
 * no Node, no Electron object ever reaches the page.
 */
import { contextBridge, ipcRenderer, type IpcRendererEvent } from "electron";
import { APP_CHANNELS, APP_UPDATE_CHANNEL, type AppUpdate, type DetourApi } from "../core/protocol/app-api.ts";

const invoke =
  <R>(channel: string) =>
  (...args: unknown[]): Promise<R> =>
    ipcRenderer.invoke(channel, ...args) as Promise<R>;

const api: DetourApi = {
  status: invoke(APP_CHANNELS.status),
  gateways: invoke(APP_CHANNELS.gateways),
  connect: invoke(APP_CHANNELS.connect),
  disconnect: invoke(APP_CHANNELS.disconnect),
  history: invoke(APP_CHANNELS.history),
  setGateway: invoke(APP_CHANNELS.setGateway),
  settings: invoke(APP_CHANNELS.settings),
  setSetting: invoke(APP_CHANNELS.setSetting),
  createDiagnostics: invoke(APP_CHANNELS.createDiagnostics),
  uploadDiagnostics: invoke(APP_CHANNELS.uploadDiagnostics),
  openSignIn: invoke(APP_CHANNELS.openSignIn),
  onUpdate(listener: (u: AppUpdate) => void): () => void {
    // The page gets the update only, never the IpcRendererEvent (which would expose the sender).
    const wrapped = (_e: IpcRendererEvent, u: AppUpdate): void => {
      listener(u);
    };
    ipcRenderer.on(APP_UPDATE_CHANNEL, wrapped);
    return () => {
      ipcRenderer.removeListener(APP_UPDATE_CHANNEL, wrapped);
    };
  },
};

contextBridge.exposeInMainWorld("detour", api);
