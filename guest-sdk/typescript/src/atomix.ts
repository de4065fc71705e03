/**
 * Atomix storage nodes: the shared shape of a node group (ConfigMap with
 * `cluster.json` and `protocol.json`, headless Service, StatefulSet,
 * optional PodDisruptionBudget) and one Service per partition, as the Rust
 * SDK's `atoll_guest::atomix` renders them.
 */

import { pretty } from "./json.js";
import {
  ContainerBuilder, PodBuilder, ServiceBuilder, StatefulSetBuilder, antiAffinity, configMap, labels as labelMap,
  podDisruptionBudget, tcpProbe, type Labels, type PersistentVolumeClaim, type PullPolicy, type Resources,
} from "./k8s.js";
import type { Observed, Output } from "./output.js";
import { configViolation, type Database, type Placement, type StatusReport, type Violation } from "./types.js";

/** Port clients use (the Atomix API). */
export const API_PORT = 5678;
/** Port replicas use among themselves. */
export const PROTOCOL_PORT = 5679;
/** Where the config ConfigMap is mounted in each node. */
export const CONFIG_DIR = "/etc/atomix";
/** Where a node keeps its data. */
export const DATA_DIR = "/var/lib/atomix";

/** The standard labels of a plugin's pods and objects. */
export function labels(db: Database, plugin: string, component: string): Labels {
  return labelMap([
    ["app.kubernetes.io/name", plugin],
    ["app.kubernetes.io/instance", db.name],
    ["app.kubernetes.io/component", component],
    ["atoll.dev/database", db.name],
  ]);
}

/** A replicated group of Atomix storage nodes. */
export interface NodeGroup {
  /** StatefulSet and ConfigMap name; the headless Service is `<name>-hs`. */
  name: string;
  /** Pod selector labels (unique to this group). */
  labels: Labels;
  replicas: number;
  image: string;
  pullPolicy: PullPolicy;
  resources: Resources;
  /** Partition ids this group serves. */
  partitions: number[];
  /** Contents of `protocol.json`. */
  protocol: unknown;
  /** Persistent data: a claim template named `data`; absent means emptyDir. */
  data?: PersistentVolumeClaim;
  /** Spread replicas across this topology key; `required` makes it a constraint. */
  spread?: { topologyKey: string; required: boolean };
  /** Render a PodDisruptionBudget with this `minAvailable`. */
  minAvailable?: number;
}

/** The headless Service giving each replica a stable DNS name. */
export function headlessService(group: NodeGroup): string {
  return `${group.name}-hs`;
}

/** `cluster.json`: every replica's id and DNS name, and the partitions (field order as Atomix's proto3 JSON). */
export function clusterConfig(group: NodeGroup, db: Database): object {
  const hs = headlessService(group);
  return {
    replicas: Array.from({ length: group.replicas }, (_, i) => {
      const pod = `${group.name}-${i}`;
      return { id: pod, host: db.podHost(pod, hs), apiPort: API_PORT, protocolPort: PROTOCOL_PORT };
    }),
    partitions: group.partitions.map((partition) => ({ partition })),
  };
}

/** Push the ConfigMap, headless Service, StatefulSet and (if asked) the PodDisruptionBudget. */
export function renderNodeGroup(group: NodeGroup, db: Database, out: Output): void {
  const hs = headlessService(group);
  out.push(configMap(group.name, group.labels, [
    ["cluster.json", pretty(clusterConfig(group, db))],
    ["protocol.json", pretty(group.protocol)],
  ]));
  out.push(new ServiceBuilder(hs, group.labels).port("api", API_PORT).port("protocol", PROTOCOL_PORT).headless().build());
  const node = new ContainerBuilder("node", group.image)
    .pullPolicy(group.pullPolicy)
    .args(["--config", `${CONFIG_DIR}/cluster.json`, "--protocol", `${CONFIG_DIR}/protocol.json`, "--node", "$(POD_NAME)"])
    .envFromField("POD_NAME", "metadata.name")
    .envFromField("POD_NAMESPACE", "metadata.namespace")
    .port("api", API_PORT)
    .port("protocol", PROTOCOL_PORT)
    .mount("config", CONFIG_DIR, true)
    .mount("data", DATA_DIR, false)
    .readiness(tcpProbe("api", 5, 10))
    .liveness(tcpProbe("api", 30, 10))
    .resources(group.resources)
    .build();
  const pod = new PodBuilder(group.labels).container(node).configMapVolume("config", group.name).terminationGracePeriod(30);
  if (group.data === undefined) pod.emptyDirVolume("data");
  if (group.spread !== undefined) pod.affinity(antiAffinity(group.labels, group.spread.topologyKey, group.spread.required));
  const sts = new StatefulSetBuilder(group.name, group.labels, hs, pod.build()).replicas(group.replicas);
  if (group.data !== undefined) sts.volumeClaim(group.data);
  out.push(sts.build());
  if (group.minAvailable !== undefined) out.push(podDisruptionBudget(group.name, group.labels, group.minAvailable));
}

/** Push Service `<db>-p<partition>` to pods matching `selector` and bind the partition to it. */
export function partitionService(db: Database, partition: number, selector: Labels, placement: Placement, out: Output): void {
  const name = db.child(`p${partition}`);
  out.push(new ServiceBuilder(name, selector).label("atoll.dev/partition", String(partition)).port("api", API_PORT).build());
  out.bind(partition, name, API_PORT, placement);
}

/** A replica count for a majority-based group: odd, 1..=9. */
export function checkQuorumReplicas(path: string, replicas: number): Violation | undefined {
  if (replicas >= 1 && replicas <= 9 && replicas % 2 === 1) return undefined;
  return configViolation(path, `must be odd and between 1 and 9 (got ${replicas}): use 1, 3, 5, 7 or 9 so a majority survives failures`);
}

/** Majority of `replicas`. */
export function quorum(replicas: number): number {
  return Math.floor(replicas / 2) + 1;
}

/** Readiness when one StatefulSet serves every partition: ready at `want` ready replicas, available at `serving`. */
export function singleGroupStatus(db: Database, observed: Observed, statefulset: string, want: number, serving: number): StatusReport {
  const ready = observed.statefulsetReady(statefulset, want);
  const all = db.partitionIds();
  if (ready >= want) return { readyPartitions: all, availablePartitions: all, message: `all ${want} replicas ready` };
  if (ready >= serving) {
    return { readyPartitions: [], availablePartitions: all, message: `${ready}/${want} replicas ready (serving: ${serving} needed)` };
  }
  return { readyPartitions: [], availablePartitions: [], message: `${ready}/${want} replicas ready (${serving} needed to serve)` };
}
