// The cache port's unit tests, run natively with `node --test` (no wasm):
// the Rust plugin's tests (plugins/cache/src/tests.rs), case for case.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Database, Placement, testing } from "../../src/index.js";
import { cache } from "./plugin.js";

const db = (partitions: number, config: unknown) => new Database("sessions", partitions).inNamespace("web").withConfig(config);

function served(out: testing.Objects, node: number): number[] {
  const cm = out.get("ConfigMap", `sessions-${node}`);
  return JSON.parse(cm["data"]["cluster.json"]).partitions.map((p: { partition: number }) => p.partition);
}

test("one node per partition by default", () => {
  const out = testing.render(cache, db(3, {}));
  assert.deepEqual(out.names("StatefulSet"), ["sessions-1", "sessions-2", "sessions-3"]);
  assert.deepEqual(out.names("ConfigMap"), ["sessions-1", "sessions-2", "sessions-3"]);
  assert.deepEqual(out.names("Service"), ["sessions-1-hs", "sessions-2-hs", "sessions-3-hs", "sessions-p1", "sessions-p2", "sessions-p3"]);
  assert.deepEqual(out.names("PodDisruptionBudget"), []);
  assert.equal(out.objects.length, 12);
  for (const n of [1, 2, 3]) assert.deepEqual(served(out, n), [n]);
});

test("nodes serve contiguous partitions, and each partition Service selects its node", () => {
  const out = testing.render(cache, db(7, { partitionsPerNode: 3 }));
  assert.deepEqual(out.names("StatefulSet"), ["sessions-1", "sessions-2", "sessions-3"]);
  assert.deepEqual(served(out, 1), [1, 2, 3]);
  assert.deepEqual(served(out, 2), [4, 5, 6]);
  assert.deepEqual(served(out, 3), [7]);
  for (let p = 1; p <= 7; p++) {
    const svc = out.get("Service", `sessions-p${p}`);
    assert.equal(svc["spec"]["selector"]["atoll.dev/node"], String(Math.floor((p - 1) / 3) + 1), `p${p}`);
    assert.equal(svc["spec"]["ports"][0]["port"], 5678);
  }
  assert.equal(out.partitions.length, 7);
  assert.deepEqual([out.partitions[6]!.partition, out.partitions[6]!.service, out.partitions[6]!.port], [7, "sessions-p7", 5678]);
});

test("a node is one in-memory replica with probes", () => {
  const sts = testing.render(cache, db(1, {})).get("StatefulSet", "sessions-1");
  assert.equal(sts["spec"]["replicas"], 1);
  assert.equal(sts["spec"]["serviceName"], "sessions-1-hs");
  assert.equal(sts["spec"]["volumeClaimTemplates"], undefined);
  const node = sts["spec"]["template"]["spec"]["containers"][0];
  assert.equal(node["imagePullPolicy"], "IfNotPresent");
  assert.ok(node["readinessProbe"]["tcpSocket"]);
  assert.equal(node["resources"], undefined);
  assert.deepEqual(sts["spec"]["template"]["spec"]["volumes"][1], { emptyDir: {}, name: "data" });
});

test("image pull policy and resources are applied", () => {
  const cfg = { image: "example/cache:dev", imagePullPolicy: "Always", resources: { limits: { memory: "2Gi" } } };
  const node = testing.render(cache, db(1, cfg)).get("StatefulSet", "sessions-1")["spec"]["template"]["spec"]["containers"][0];
  assert.equal(node["image"], "example/cache:dev");
  assert.equal(node["imagePullPolicy"], "Always");
  assert.deepEqual(node["resources"], { limits: { memory: "2Gi" } });
});

test("validation names each field and the fix", () => {
  const v = testing.violations(cache, db(2, { partitionsPerNode: 0, image: " ", resources: { requests: { memory: "lots" } } }));
  assert.deepEqual(v.map((x) => x.field), [
    "spec.storage.config.partitionsPerNode",
    "spec.storage.config.image",
    "spec.storage.config.resources.requests.memory",
  ]);
  assert.match(v[0]!.message, /\(got 0\).*use 1/);
  assert.deepEqual(testing.violations(cache, db(2, {})), []);
});

test("unknown and mistyped fields are named", () => {
  const v = testing.violations(cache, db(1, { partitionPerNode: 2 }))[0]!;
  assert.equal(v.field, "spec.storage.config.partitionPerNode");
  assert.match(v.message, /unknown field `partitionPerNode`.*partitionsPerNode/);
  assert.equal(testing.violations(cache, db(1, { partitionsPerNode: -1 }))[0]!.field, "spec.storage.config.partitionsPerNode");
});

test("render refuses an invalid Database", () => {
  assert.throws(
    () => testing.render(cache, db(1, { partitionsPerNode: 0 })),
    (e: testing.RenderFailed) => e.error.tag === "invalid" && e.error.violations.length === 1,
  );
});

test("readiness follows each node's StatefulSet", () => {
  const d = db(5, { partitionsPerNode: 2 });
  const out = testing.render(cache, d);
  const sts = (n: number, ready: number) => testing.withStatus(out.get("StatefulSet", `sessions-${n}`), { replicas: 1, readyReplicas: ready });
  const none = testing.status(cache, d, []);
  assert.deepEqual(none.readyPartitions, []);
  assert.equal(none.message, "0/3 nodes ready; not ready: node 1, node 2, node 3");
  const some = testing.status(cache, d, [sts(2, 1), sts(3, 0)]);
  assert.deepEqual(some.readyPartitions, [3, 4]);
  assert.equal(some.message, "1/3 nodes ready; not ready: node 1, node 3");
  const all = testing.status(cache, d, [sts(1, 1), sts(2, 1), sts(3, 1)]);
  assert.deepEqual(all.readyPartitions, [1, 2, 3, 4, 5]);
  assert.equal(all.message, "all 3 nodes ready");
});

test("the status message stays short with many nodes", () => {
  assert.equal(
    testing.status(cache, db(40, {}), []).message,
    "0/40 nodes ready; not ready: node 1, node 2, node 3, node 4, node 5 and 35 more",
  );
});

test("status of a config that fails checks is nothing ready", () => {
  const report = testing.status(cache, db(2, { partitionsPerNode: 0 }), []);
  assert.deepEqual(report.readyPartitions, []);
  assert.ok(report.message.startsWith("invalid config: spec.storage.config.partitionsPerNode: must be at least 1"), report.message);
});

test("partitions live nowhere durable", () => {
  const out = testing.render(cache, db(5, { partitionsPerNode: 2 }));
  assert.equal(out.partitions.length, 5);
  for (const b of out.partitions) assert.deepEqual(b.placement, Placement.nowhere);
});
