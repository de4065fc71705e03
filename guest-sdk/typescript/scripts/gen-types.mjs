// Generates the TypeScript declarations of the plugin world from wit/ into
// gen/ (never edited by hand; `npm run build` runs this first): what `jco
// guest-types wit --world-name plugin -o gen` does, run after
// ./preopen.mjs works around jco 1.35.0's missing preopen.
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { root, sdk, transpileDir } from "./preopen.mjs";

const wit = resolve(root, "wit");
const out = resolve(sdk, "gen");
const { generateGuestTypes } = await import(pathToFileURL(join(transpileDir, "dist/index.js")).href);
const files = await generateGuestTypes(wit, { worldName: "plugin", outDir: out + "/" });
await rm(out, { recursive: true, force: true });
for (const [path, contents] of Object.entries(files)) {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, contents);
}
console.error(`gen-types: ${Object.keys(files).length} files from ${wit} into ${out}`);
