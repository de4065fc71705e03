import { test } from "node:test";
import assert from "node:assert/strict";
import { quantity } from "../src/index.js";

test("values compare across units", () => {
  assert.equal(quantity.value("64Mi"), 67108864);
  assert.equal(quantity.value("1Gi"), 1073741824);
  assert.equal(quantity.value("1G"), 1e9);
  assert.equal(quantity.value("500m"), 0.5);
  assert.equal(quantity.value("1.5Ki"), 1536);
  assert.equal(quantity.value("1e3"), 1000);
  assert.equal(quantity.value("2E6"), 2e6);
  assert.equal(quantity.value("+1k"), 1000);
  assert.equal(quantity.value("7"), 7);
  assert.ok(quantity.value("1Mi") > quantity.value("1M"));
  assert.throws(() => quantity.value("1GB"));
});

test("accepts Kubernetes quantities", () => {
  for (const ok of ["1Gi", "10Gi", "500m", "1.5", "64Mi", "1e3", "2E6", "0", "+1k"]) {
    assert.equal(quantity.check(ok), undefined, ok);
  }
});

test("rejects nonsense, quoting it", () => {
  for (const bad of ["", "Gi", "1GB", "1.2.3Gi", "ten", "1 Gi", "-1Gi", "1e"]) {
    assert.match(quantity.check(bad) ?? "", /is not a Kubernetes quantity/, bad);
  }
  assert.equal(
    quantity.check("lots"),
    "`lots` is not a Kubernetes quantity; use a number with an optional unit such as 512Mi, 10Gi or 500m",
  );
});
