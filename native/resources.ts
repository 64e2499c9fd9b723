/**
 * Where the files Detour hands to other programs live (resources/, e.g. openconnect's hand-back script): the
 * repository's resources/ when run from source, and the folder the bundler names when run as the single-file
 * bundle (scripts/build-daemon.mjs), whose import.meta.url is the bundle's own, not this module's.
 */
import { fileURLToPath } from "node:url";

/** Set only in the bundle, by esbuild's `define`: resources/ relative to the bundle file, ending in "/". */
declare const __DETOUR_BUNDLE_RESOURCES__: string | undefined;

const RESOURCES_FROM_HERE =
  typeof __DETOUR_BUNDLE_RESOURCES__ === "string" ? __DETOUR_BUNDLE_RESOURCES__ : "../resources/";

/** The absolute path of `rel` (e.g. "engines/openconnect/handback.sh") inside resources/. */
export function resourcePath(rel: string): string {
  return fileURLToPath(new URL(RESOURCES_FROM_HERE + rel, import.meta.url));
}
