// jco 1.35.0 reads WIT through preview2-shim 0.26.1 (nested under
// jco-transpile), which no longer preopens `/` by default: `jco
// guest-types` and `jco componentize` then fail with "No such file or
// directory (os error 44)" on every path. Importing this module first gives
// that shim instance `/` again, so the same jco code runs.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const root = resolve(sdk, "../..");

const transpile = join(sdk, "node_modules/@bytecodealliance/jco-transpile");
const nested = join(transpile, "node_modules/@bytecodealliance/preview2-shim");
const shimDir = existsSync(nested) ? nested : join(sdk, "node_modules/@bytecodealliance/preview2-shim");
const shim = await import(pathToFileURL(join(shimDir, "dist/nodejs/filesystem.js")).href);
// The whole file system, as older shims preopened it: plugins live anywhere.
shim._setPreopens({ "/": "/" });

export const transpileDir = transpile;
