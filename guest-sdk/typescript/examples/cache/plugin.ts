/**
 * cache, ported from `plugins/cache` (Rust): partitions held in memory by
 * single-replica Atomix cache nodes. Its output is byte-identical to the
 * Rust plugin's for every Database.
 *
 * Per node `n` (1..=ceil(partitions / partitionsPerNode)): ConfigMap and
 * StatefulSet `<db>-<n>` (one replica, emptyDir), headless Service
 * `<db>-<n>-hs`. Node `n` serves the contiguous partitions
 * `(n-1)*partitionsPerNode+1 ..= min(n*partitionsPerNode, partitions)`. Per
 * partition `p`: Service `<db>-p<p>` selecting its node. A partition is ready
 * when its node's pod is.
 */

import { atomix, c, k8s, type Database, type Plugin, type Violation, configViolation, Placement } from "../../src/index.js";

const PullPolicy = c.enumeration("PullPolicy", "`imagePullPolicy`, as users write it in config.", k8s.PULL_POLICIES);

const Resources = c.struct(
  "Resources",
  "Container `resources` as users write them in config: quantities by\nresource name, e.g. `requests: {cpu: 500m, memory: 1Gi}`.",
  {
    requests: c.field(c.map(c.string()), { default: {} }),
    limits: c.field(c.map(c.string()), { default: {} }),
  },
);

/** `spec.storage.config` of a cache Database. */
export const Config = c.struct("Config", "`spec.storage.config` of a cache Database.", {
  partitionsPerNode: c.field(c.u32(), {
    default: 1,
    description:
      "Partitions each cache node serves, at least 1; the Database runs\nceil(partitions / partitionsPerNode) nodes.",
  }),
  image: c.field(c.string(), { default: "atomix/cache-storage-node:v0.5.1", description: "Cache node image." }),
  imagePullPolicy: c.field<k8s.PullPolicy>(PullPolicy, { default: "IfNotPresent", description: "When to pull the image." }),
  resources: c.field(Resources, {
    default: { limits: {}, requests: {} },
    description:
      "Container resource requests and limits of each node; the cache lives in\nmemory, so size the memory limit for the data.",
  }),
});
export type Config = c.Infer<typeof Config>;

/** How many nodes serve `partitions` at `perNode` partitions each. */
export function nodeCount(partitions: number, perNode: number): number {
  return Math.ceil(partitions / perNode);
}

/** The node serving partition `p` (both 1-based). */
export function nodeOf(partition: number, perNode: number): number {
  return Math.floor((partition - 1) / perNode) + 1;
}

/** How many not-ready nodes the status message names before summarising. */
const MESSAGE_NODES = 5;

function node(db: Database, config: Config, n: number): atomix.NodeGroup {
  const perNode = config.partitionsPerNode;
  const labels = atomix.labels(db, cache.name, "node");
  labels["atoll.dev/node"] = String(n);
  const partitions: number[] = [];
  for (let p = (n - 1) * perNode + 1; p <= Math.min(n * perNode, db.partitions); p++) partitions.push(p);
  return {
    name: db.child(n),
    labels,
    replicas: 1,
    image: config.image,
    pullPolicy: config.imagePullPolicy,
    resources: config.resources,
    partitions,
    protocol: {},
    // A budget on a single replica would block every node drain.
  };
}

export const cache: Plugin<Config> = {
  name: "cache",
  version: "0.1.0",
  description: "In-memory cache partitions on single-replica nodes (Atomix cache storage nodes)",
  config: Config,

  check(_db, config): Violation[] {
    const v: Violation[] = [];
    if (config.partitionsPerNode === 0) {
      v.push(configViolation(
        "partitionsPerNode",
        "must be at least 1 (got 0): use 1 for a node per partition, or more to pack partitions onto fewer nodes",
      ));
    }
    if (config.image.trim() === "") v.push(configViolation("image", "must name a container image"));
    v.push(...k8s.checkResources(config.resources, "resources"));
    return v;
  },

  render(db, config, out) {
    const perNode = config.partitionsPerNode;
    const nodes: atomix.NodeGroup[] = [];
    for (let n = 1; n <= nodeCount(db.partitions, perNode); n++) nodes.push(node(db, config, n));
    for (const group of nodes) atomix.renderNodeGroup(group, db, out);
    for (const p of db.partitionIds()) {
      const group = nodes[nodeOf(p, perNode) - 1]!;
      // In memory only: a cache keeps nothing that a move could lose.
      atomix.partitionService(db, p, group.labels, Placement.nowhere, out);
    }
  },

  status(db, config, observed) {
    const perNode = config.partitionsPerNode;
    const nodes = nodeCount(db.partitions, perNode);
    const readyNodes: boolean[] = [];
    for (let n = 1; n <= nodes; n++) readyNodes.push(observed.statefulsetReady(db.child(n), 1) >= 1);
    const readyPartitions = db.partitionIds().filter((p) => readyNodes[nodeOf(p, perNode) - 1]);
    const waiting: string[] = [];
    for (let n = 1; n <= nodes; n++) if (!readyNodes[n - 1]) waiting.push(`node ${n}`);
    let message: string;
    if (waiting.length === 0) {
      message = `all ${nodes} nodes ready`;
    } else {
      let named = waiting.slice(0, MESSAGE_NODES).join(", ");
      if (waiting.length > MESSAGE_NODES) named += ` and ${waiting.length - MESSAGE_NODES} more`;
      message = `${nodes - waiting.length}/${nodes} nodes ready; not ready: ${named}`;
    }
    // One node per partition and no replicas: available is ready.
    return { readyPartitions, availablePartitions: [...readyPartitions], message };
  },
};
