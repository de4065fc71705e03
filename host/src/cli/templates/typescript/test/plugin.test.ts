import { test } from "node:test";
import assert from "node:assert/strict";
import { Database, testing } from "@atoll/guest";
import { thePlugin } from "../plugin.js";

test("renders a Service per partition", () => {
  const out = testing.render(thePlugin, new Database("demo", 2));
  assert.deepEqual(out.names("Service"), ["demo-hs", "demo-p1", "demo-p2"]);
  assert.deepEqual(out.names("StatefulSet"), ["demo"]);
});

test("zero replicas is refused by name", () => {
  const db = new Database("demo", 1).withConfig({ replicas: 0 });
  assert.equal(testing.violations(thePlugin, db)[0]!.field, "spec.storage.config.replicas");
});
