// Builds a plugin component: `node scripts/componentize.mjs ENTRY.ts OUT.wasm`
// is `jco componentize ENTRY.ts --wit wit --world-name plugin --disable all
// -o OUT.wasm` (TypeScript bundled by jco, StarlingMonkey from
// componentize-js; no WASI features: the sandbox grants none), run after
// ./preopen.mjs works around jco 1.35.0's missing preopen.
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { root, sdk } from "./preopen.mjs";

const [entry, out] = process.argv.slice(2);
if (!entry || !out) {
  console.error("usage: node scripts/componentize.mjs ENTRY.ts OUT.wasm");
  process.exit(2);
}
const { componentize } = await import(
  pathToFileURL(resolve(sdk, "node_modules/@bytecodealliance/jco/dist/cmd/componentize.js")).href
);
await mkdir(dirname(resolve(out)), { recursive: true });
await componentize(resolve(entry), {
  wit: resolve(root, "wit"),
  worldName: "plugin",
  disable: ["all"],
  out: resolve(out),
});
