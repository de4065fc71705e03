import { test } from "node:test";
import assert from "node:assert/strict";
import { objectJson, pretty } from "../src/json.js";

test("apiVersion and kind lead, every other field in Rust field-name order", () => {
  const text = objectJson({
    metadata: { name: "x", labels: { b: "2", a: "1" } },
    kind: "ConfigMap",
    data: { "z.json": "{}", "a.json": "[]" },
    apiVersion: "v1",
  });
  assert.equal(text, '{"apiVersion":"v1","kind":"ConfigMap","data":{"a.json":"[]","z.json":"{}"},"metadata":{"labels":{"a":"1","b":"2"},"name":"x"}}');
});

test("undefined fields are left out and nested apiVersion sorts like any field", () => {
  assert.equal(objectJson({ kind: "K", spec: { b: undefined, a: [{ kind: "C", apiVersion: "v1" }] } }), '{"kind":"K","spec":{"a":[{"apiVersion":"v1","kind":"C"}]}}');
});

test("camelCase fields sort by their snake_case Rust names", () => {
  // Rust: read_only < readiness_probe ('_' < 'i'), type_ as its own name.
  assert.equal(objectJson({ readinessProbe: 1, readOnly: 2 }), '{"readOnly":2,"readinessProbe":1}');
  // k8s-openapi's rollingUpdate comes before type (rolling_update < type_).
  assert.equal(objectJson({ type: "RollingUpdate", rollingUpdate: {} }), '{"rollingUpdate":{},"type":"RollingUpdate"}');
  assert.equal(objectJson({ maxUnavailable: 0, maxSurge: 1 }), '{"maxSurge":1,"maxUnavailable":0}');
});

test("strings escape as serde_json escapes them", () => {
  assert.equal(objectJson({ a: 'q"\\\n\t\u0001é/' }), '{"a":"q\\"\\\\\\n\\t\\u0001é/"}');
});

test("pretty JSON keeps the given field order with two-space indent", () => {
  assert.equal(pretty({ b: 1, a: [{ x: 1 }] }), '{\n  "b": 1,\n  "a": [\n    {\n      "x": 1\n    }\n  ]\n}');
  assert.equal(pretty({}), "{}");
});
