// The TypeScript cache port against the Rust plugin's own output: the
// fixture is what `atoll_guest::dispatch::render::<Cache>` returned for
// Database `sessions` (3 partitions, partitionsPerNode 2, resources), one
// object per line, then the Rust plugin's config schema.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Database, dispatch } from "../src/index.js";
import { cache } from "../examples/cache/plugin.js";

const fixture = readFileSync(new URL("../../test/fixtures/cache-sessions-3.jsonl", import.meta.url), "utf8")
  .split("\n")
  .filter((l) => l !== "");

test("the cache port renders the Rust plugin's bytes", () => {
  const db = new Database("sessions", 3).withConfig({
    partitionsPerNode: 2,
    resources: { limits: { memory: "256Mi" }, requests: { cpu: "100m" } },
  });
  const r = dispatch.render(cache, db);
  assert.ok("ok" in r, JSON.stringify(r));
  const expected = fixture.slice(0, -1);
  assert.equal(r.ok.objects.length, expected.length);
  r.ok.objects.forEach((o, i) => assert.equal(o, expected[i], `object ${i}`));
});

test("the cache port publishes the Rust plugin's config schema", () => {
  assert.equal(dispatch.metadata(cache).configSchema, fixture.at(-1));
});
