// Generates the TypeScript declarations of the plugin world from wit/ into
// gen/ (never edited by hand; `npm run build` runs this first).
//
// Why not `jco guest-types`: with jco 1.35.0 the WIT reader runs against
// preview2-shim 0.26.1, which no longer preopens `/` by default, so every
// path fails with "No such file or directory (os error 44)". This calls the
// same generator (jco-transpile's generateGuestTypes) after giving that
// shim instance the repository's wit/ directory.
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(here, "..");
const wit = resolve(sdk, "../../wit");
const out = resolve(sdk, "gen");

// npm ci installs both where package-lock.json says: jco-transpile hoisted,
// the shim nested under it (a top-level shim, 0.25, belongs to componentize-js).
const transpile = join(sdk, "node_modules/@bytecodealliance/jco-transpile");
const nested = join(transpile, "node_modules/@bytecodealliance/preview2-shim");
const shimDir = existsSync(nested)
  ? nested
  : join(sdk, "node_modules/@bytecodealliance/preview2-shim");
const shim = await import(pathToFileURL(join(shimDir, "dist/nodejs/filesystem.js")).href);
shim._setPreopens({ [wit]: wit });

const { generateGuestTypes } = await import(
  pathToFileURL(join(transpile, "dist/index.js")).href
);
const files = await generateGuestTypes(wit, { worldName: "plugin", outDir: out + "/" });
await rm(out, { recursive: true, force: true });
for (const [path, contents] of Object.entries(files)) {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, contents);
}
console.error(`gen-types: ${Object.keys(files).length} files from ${wit} into ${out}`);
