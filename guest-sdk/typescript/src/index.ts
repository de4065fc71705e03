/**
 * The atoll guest SDK for TypeScript: write a storage plugin as plain
 * TypeScript (a {@link Plugin}), render typed Kubernetes objects with the
 * same builders as the Rust SDK (byte-identical JSON), declare the config
 * once for parsing with field paths and a published JSON Schema, unit-test
 * with `node --test` through `testing`, and build a wasm32-wasip2 component
 * with jco/componentize-js (`component.ts`).
 */

export * as atomix from "./atomix.js";
export * as c from "./config.js";
export * as k8s from "./k8s.js";
export * as quantity from "./quantity.js";
export * as testing from "./testing.js";
export { objectJson, pretty } from "./json.js";
export { Observed, Output } from "./output.js";
export type { Plugin } from "./plugin.js";
export * as dispatch from "./plugin.js";
export * from "./types.js";
