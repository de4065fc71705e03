/** What a plugin renders, and what it observes. */

import { objectJson } from "./json.js";
import type { KubeObject } from "./k8s.js";
import type { PartitionBinding, Placement, Rendered } from "./types.js";

/** Collects rendered objects and partition bindings. */
export class Output {
  private objects: string[] = [];
  private partitions: PartitionBinding[] = [];

  /** Add a typed Kubernetes object, encoded as the Rust SDK encodes it. */
  push(object: KubeObject): void {
    this.objects.push(objectJson(object));
  }

  /** Add an object as JSON text, unchecked (a custom resource); prefer {@link push}. */
  pushRaw(json: string): void {
    this.objects.push(json);
  }

  /** Say where clients reach `partition` and where its data lives. Bind every partition exactly once. */
  bind(partition: number, service: string, port: number, placement: Placement): void {
    this.partitions.push({ partition, service, port, placement });
  }

  /** What was rendered. */
  finish(): Rendered {
    return { objects: this.objects, partitions: this.partitions };
  }
}

type Json = Record<string, unknown>;

/** The objects atoll observed in the cluster for one Database. */
export class Observed {
  private constructor(private readonly objects: Json[]) {}

  /** Parse observed objects; entries that are not JSON objects are ignored. */
  static parse(objects: string[]): Observed {
    const parsed: Json[] = [];
    for (const text of objects) {
      try {
        const v: unknown = JSON.parse(text);
        if (v !== null && typeof v === "object" && !Array.isArray(v)) parsed.push(v as Json);
      } catch {
        // readiness must never fail on something the plugin cannot read
      }
    }
    return new Observed(parsed);
  }

  /** Build from values (tests). */
  static fromValues(objects: object[]): Observed {
    return new Observed(objects as Json[]);
  }

  /** The raw observed object of `kind` named `name`. */
  find(kind: string, name: string): Json | undefined {
    return this.objects.find((o) => o["kind"] === kind && (o["metadata"] as Json | undefined)?.["name"] === name);
  }

  /**
   * Ready replicas of StatefulSet `name`, checked against `want`: one whose
   * spec still has another replica count counts as having none ready.
   */
  statefulsetReady(name: string, want: number): number {
    const sts = this.find("StatefulSet", name);
    if (sts === undefined) return 0;
    const specReplicas = integer((sts["spec"] as Json | undefined)?.["replicas"]) ?? 1;
    const ready = integer((sts["status"] as Json | undefined)?.["readyReplicas"]) ?? 0;
    return specReplicas === want ? ready : 0;
  }

  /** Ready replicas of Deployment `name`, `0` if absent. */
  deploymentReady(name: string): number {
    const d = this.find("Deployment", name);
    return integer((d?.["status"] as Json | undefined)?.["readyReplicas"]) ?? 0;
  }
}

function integer(v: unknown): number | undefined {
  return typeof v === "number" && Number.isInteger(v) ? v : undefined;
}
