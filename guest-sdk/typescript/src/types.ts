/** Mirrors of the WIT records (`wit/storage.wit`), as plugins use them. */

/** The Database being handled (WIT `database`). */
export class Database {
  /** `metadata.namespace`. */
  namespace = "default";
  /** `metadata.uid` (empty offline). */
  uid = "";
  /** `metadata.generation`. */
  generation = 1n;
  /** `metadata.labels`. */
  labels: Record<string, string> = {};
  /** `spec.storage.config` as JSON text. */
  config = "{}";
  /** Cluster DNS domain, e.g. `cluster.local`. */
  clusterDomain = "cluster.local";

  /** A Database for tests and tools: namespace `default`, domain `cluster.local`, empty config. */
  constructor(
    /** `metadata.name`. */
    public name: string,
    /** `spec.partitions`. */
    public partitions: number,
  ) {}

  /** Set the namespace. */
  inNamespace(namespace: string): this {
    this.namespace = namespace;
    return this;
  }

  /** Set `spec.storage.config`. */
  withConfig(config: unknown): this {
    this.config = JSON.stringify(config);
    return this;
  }

  /** Partition ids, `1..=partitions`. */
  partitionIds(): number[] {
    return Array.from({ length: this.partitions }, (_, i) => i + 1);
  }

  /** `<name>-<suffix>`: the only shape of name the output policy accepts besides the Database's own. */
  child(suffix: string | number): string {
    return `${this.name}-${suffix}`;
  }

  /** Stable DNS name of a pod behind a headless Service. */
  podHost(pod: string, headlessService: string): string {
    return `${pod}.${headlessService}.${this.namespace}.svc.${this.clusterDomain}`;
  }
}

/** One thing wrong with a Database (WIT `violation`). */
export interface Violation {
  /** Path from the Database root, e.g. `spec.storage.config.replicas`. */
  field: string;
  /** What is wrong and what is allowed. */
  message: string;
}

/** A violation of `spec.storage.config.<path>`. */
export function configViolation(path: string, message: string): Violation {
  return { field: path === "" ? "spec.storage.config" : `spec.storage.config.${path}`, message };
}

/** A violation of `spec.<path>`, e.g. `partitions`. */
export function specViolation(path: string, message: string): Violation {
  return { field: `spec.${path}`, message };
}

/** `field: message`, as the Rust SDK's `Display`. */
export function violationText(v: Violation): string {
  return `${v.field}: ${v.message}`;
}

/**
 * Where a partition's data lives (WIT `placement`): atoll refuses a render
 * that changes it while the old home holds data, until approved once.
 */
export type Placement = { tag: "nowhere" } | { tag: "workload"; kind: string; name: string };

export const Placement = {
  /** In memory only (a cache): serving it elsewhere loses nothing kept. */
  nowhere: { tag: "nowhere" } as Placement,
  /** The pods of this workload hold the data, e.g. a StatefulSet with volumes. */
  workload(kind: string, name: string): Placement {
    return { tag: "workload", kind, name };
  },
  /** The partition lives in StatefulSet `name`. */
  statefulset(name: string): Placement {
    return { tag: "workload", kind: "StatefulSet", name };
  },
};

/** Where one partition is served (WIT `partition-binding`). */
export interface PartitionBinding {
  partition: number;
  service: string;
  port: number;
  placement: Placement;
}

/** The desired state (WIT `rendered`): objects as JSON text. */
export interface Rendered {
  objects: string[];
  partitions: PartitionBinding[];
}

/** Why a render failed (WIT `render-error`). */
export type RenderError =
  | { tag: "invalid"; violations: Violation[] }
  | { tag: "failed"; message: string };

/** Readiness and availability judged from observed objects (WIT `status-report`). */
export interface StatusReport {
  /** Partitions whose every replica is ready. */
  readyPartitions: number[];
  /** Partitions that can serve now, perhaps with replicas missing; the host counts ready ones too. */
  availablePartitions: number[];
  /** A short human summary. */
  message: string;
}

/** What a plugin says about itself (WIT `metadata`). */
export interface Metadata {
  name: string;
  version: string;
  description: string;
  /** JSON Schema of `spec.storage.config`, as JSON text. */
  configSchema: string;
}
