import { test } from "node:test";
import assert from "node:assert/strict";
import { c, Database } from "../src/index.js";

const Storage = c.struct("Storage", "Volumes.", { size: c.field(c.string(), { default: "" }) });
const Cfg = c.struct("Cfg", "A test config.", {
  replicas: c.field(c.u32(), { default: 0, description: "How many." }),
  storage: c.field(Storage, { default: { size: "" } }),
  name: c.field(c.optional(c.string())),
  mode: c.field(c.enumeration("Mode", "How.", ["Fast", "Safe"] as const), { default: "Safe" }),
});

const parse = (config: unknown) => c.parseConfig(Cfg, new Database("db", 1).withConfig(config));

test("empty and null config use defaults", () => {
  for (const raw of ["", "null", "{}"]) {
    const db = new Database("db", 1);
    db.config = raw;
    const r = c.parseConfig(Cfg, db);
    assert.ok("ok" in r);
    assert.equal(r.ok.replicas, 0);
    assert.equal(r.ok.mode, "Safe");
    assert.equal(r.ok.name, undefined);
  }
});

test("type errors name the nested field in serde's words", () => {
  assert.deepEqual(parse({ storage: { size: 3 } }), {
    err: { field: "spec.storage.config.storage.size", message: "invalid type: integer `3`, expected a string" },
  });
  assert.deepEqual(parse({ replicas: "3" }), {
    err: { field: "spec.storage.config.replicas", message: 'invalid type: string "3", expected u32' },
  });
  assert.deepEqual(parse({ replicas: -1 }), {
    err: { field: "spec.storage.config.replicas", message: "invalid value: integer `-1`, expected u32" },
  });
  assert.deepEqual(parse({ storage: "big" }), {
    err: { field: "spec.storage.config.storage", message: 'invalid type: string "big", expected struct Storage' },
  });
  assert.deepEqual(parse({ mode: 3 }), { err: { field: "spec.storage.config.mode", message: "expected value" } });
});

test("a struct reads from an array by position, as serde does", () => {
  const r = parse([2]);
  assert.ok("ok" in r);
  assert.equal(r.ok.replicas, 2);
  assert.equal(r.ok.mode, "Safe");
  assert.deepEqual(parse([1, {}, null, "Fast", 5]), {
    err: { field: "spec.storage.config", message: "invalid length 5, expected fewer elements in array" },
  });
});

test("unknown fields and variants are named with what is allowed", () => {
  assert.deepEqual(parse({ storage: { sise: "1" } }), {
    err: { field: "spec.storage.config.storage.sise", message: "unknown field `sise`, expected `size`" },
  });
  assert.deepEqual(parse({ replica: 3 }), {
    err: {
      field: "spec.storage.config.replica",
      message: "unknown field `replica`, expected one of `replicas`, `storage`, `name`, `mode`",
    },
  });
  assert.deepEqual(parse({ mode: "Slow" }), {
    err: { field: "spec.storage.config.mode", message: "unknown variant `Slow`, expected `Fast` or `Safe`" },
  });
});

test("the schema is laid out as schemars lays it out", () => {
  assert.equal(
    c.configSchema(Cfg),
    JSON.stringify({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      title: "Cfg",
      description: "A test config.",
      type: "object",
      properties: {
        mode: { $ref: "#/$defs/Mode", default: "Safe" },
        name: { type: ["string", "null"] },
        replicas: { description: "How many.", type: "integer", format: "uint32", default: 0, minimum: 0 },
        storage: { $ref: "#/$defs/Storage", default: { size: "" } },
      },
      additionalProperties: false,
      $defs: {
        Mode: { description: "How.", type: "string", enum: ["Fast", "Safe"] },
        Storage: { description: "Volumes.", type: "object", properties: { size: { type: "string", default: "" } }, additionalProperties: false },
      },
    }),
  );
});

test("a field without a default is required", () => {
  const Need = c.struct("Need", "x", { size: c.field(c.string()) });
  assert.deepEqual(c.parseConfig(Need, new Database("db", 1)), {
    err: { field: "spec.storage.config", message: "missing field `size`" },
  });
  assert.match(c.configSchema(Need), /"required":\["size"\]/);
});
