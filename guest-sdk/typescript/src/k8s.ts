/**
 * Typed Kubernetes objects and the builders storage plugins render them
 * with: the same builders, defaults and field values as the Rust SDK's
 * `atoll_guest::k8s`, so the same calls give byte-identical JSON (see
 * `json.ts`). Builders set only what a plugin asked for plus safe defaults;
 * the host adds namespace, owner references and atoll's labels.
 */

import { configViolation, type Violation } from "./types.js";
import * as quantity from "./quantity.js";

/** Label map; rendered in key order whatever order it was built in. */
export type Labels = Record<string, string>;

export interface ObjectMeta {
  name?: string;
  labels?: Labels;
  annotations?: Record<string, string>;
}
export interface LabelSelector {
  matchLabels?: Labels;
}
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}
export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
export interface Probe {
  tcpSocket?: { port: string | number };
  exec?: { command?: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  failureThreshold?: number;
}
export interface ResourceRequirements {
  requests?: Record<string, string>;
  limits?: Record<string, string>;
}
export interface Container {
  name: string;
  image?: string;
  imagePullPolicy?: string;
  command?: string[];
  args?: string[];
  ports?: ContainerPort[];
  env?: EnvVar[];
  volumeMounts?: VolumeMount[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: ResourceRequirements;
  securityContext?: SecurityContext;
}
export interface SeccompProfile {
  type: string;
}
export interface SecurityContext {
  allowPrivilegeEscalation?: boolean;
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  capabilities?: { add?: string[]; drop?: string[] };
  seccompProfile?: SeccompProfile;
}
export interface PodSecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  fsGroup?: number;
  seccompProfile?: SeccompProfile;
}
export interface PodAffinityTerm {
  labelSelector?: LabelSelector;
  topologyKey: string;
}
export interface Affinity {
  podAntiAffinity?: {
    requiredDuringSchedulingIgnoredDuringExecution?: PodAffinityTerm[];
    preferredDuringSchedulingIgnoredDuringExecution?: { weight: number; podAffinityTerm: PodAffinityTerm }[];
  };
}
export interface Volume {
  name: string;
  configMap?: { name: string };
  emptyDir?: Record<string, never>;
}
export interface PodSpec {
  automountServiceAccountToken?: boolean;
  containers: Container[];
  securityContext?: PodSecurityContext;
  volumes?: Volume[];
  affinity?: Affinity;
  terminationGracePeriodSeconds?: number;
}
export interface PodTemplateSpec {
  metadata?: ObjectMeta;
  spec?: PodSpec;
}
export interface PersistentVolumeClaim {
  apiVersion: "v1";
  kind: "PersistentVolumeClaim";
  metadata: ObjectMeta;
  spec?: {
    accessModes?: string[];
    storageClassName?: string;
    resources?: { requests?: Record<string, string> };
  };
}
export interface StatefulSetUpdateStrategy {
  type?: string;
  rollingUpdate?: { partition?: number; maxUnavailable?: number | string };
}
export interface DeploymentStrategy {
  type?: string;
  rollingUpdate?: { maxUnavailable?: number | string; maxSurge?: number | string };
}
export interface StatefulSet {
  apiVersion: "apps/v1";
  kind: "StatefulSet";
  metadata: ObjectMeta;
  spec?: {
    replicas?: number;
    selector: LabelSelector;
    serviceName?: string;
    podManagementPolicy?: string;
    updateStrategy?: StatefulSetUpdateStrategy;
    template: PodTemplateSpec;
    persistentVolumeClaimRetentionPolicy?: { whenDeleted?: string; whenScaled?: string };
    volumeClaimTemplates?: Omit<PersistentVolumeClaim, "apiVersion" | "kind">[];
  };
}
export interface Deployment {
  apiVersion: "apps/v1";
  kind: "Deployment";
  metadata: ObjectMeta;
  spec?: { replicas?: number; selector: LabelSelector; template: PodTemplateSpec; strategy?: DeploymentStrategy };
}
export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: string | number;
  protocol?: string;
}
export interface Service {
  apiVersion: "v1";
  kind: "Service";
  metadata: ObjectMeta;
  spec?: { selector?: Labels; ports?: ServicePort[]; clusterIP?: string; publishNotReadyAddresses?: boolean };
}
export interface ConfigMap {
  apiVersion: "v1";
  kind: "ConfigMap";
  metadata: ObjectMeta;
  data?: Record<string, string>;
}
export interface PodDisruptionBudget {
  apiVersion: "policy/v1";
  kind: "PodDisruptionBudget";
  metadata: ObjectMeta;
  spec?: { selector?: LabelSelector; minAvailable?: number | string; maxUnavailable?: number | string };
}

/** Any object a plugin may render with these builders. */
export type KubeObject = StatefulSet | Deployment | Service | ConfigMap | PodDisruptionBudget | PersistentVolumeClaim;

/** A label map from pairs. */
export function labels(pairs: Iterable<[string, string]>): Labels {
  return Object.fromEntries(pairs);
}

/** `metadata` with a name and labels; namespace and owner are the host's job. */
export function meta(name: string, labelMap: Labels): ObjectMeta {
  return { name, labels: { ...labelMap } };
}

function selector(labelMap: Labels): LabelSelector {
  return { matchLabels: { ...labelMap } };
}

/** `imagePullPolicy`, as users write it in config. */
export type PullPolicy = "Always" | "IfNotPresent" | "Never";
export const PULL_POLICIES: readonly PullPolicy[] = ["Always", "IfNotPresent", "Never"];

/** Container `resources` as users write them in config: quantities by resource name. */
export interface Resources {
  requests: Record<string, string>;
  limits: Record<string, string>;
}

/** Violations for quantities that are not Kubernetes quantities; `path` is the config path, e.g. `resources`. */
export function checkResources(resources: Resources, path: string): Violation[] {
  const out: Violation[] = [];
  for (const kind of ["requests", "limits"] as const) {
    for (const name of Object.keys(resources[kind]).sort()) {
      const problem = quantity.check(resources[kind][name]!);
      if (problem !== undefined) out.push(configViolation(`${path}.${kind}.${name}`, problem));
    }
  }
  return out;
}

function resourceRequirements(r: Resources): ResourceRequirements | undefined {
  const empty = (m: Record<string, string>) => Object.keys(m).length === 0;
  if (empty(r.requests) && empty(r.limits)) return undefined;
  return {
    requests: empty(r.requests) ? undefined : { ...r.requests },
    limits: empty(r.limits) ? undefined : { ...r.limits },
  };
}

/**
 * The user (and group) pods run as unless {@link PodBuilder.runAs} says
 * otherwise, as in the Rust SDK: pods meet Pod Security `restricted`.
 */
export const DEFAULT_USER = 1000;

/** A container's `restricted` security context: non-root, no privilege escalation, no capabilities, the runtime's seccomp profile. */
function restrictedContainer(): SecurityContext {
  return {
    allowPrivilegeEscalation: false,
    runAsNonRoot: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

/** Builds a {@link Container}, `restricted` by default. */
export class ContainerBuilder {
  private c: Container;

  /** A container running `image`. */
  constructor(name: string, image: string) {
    this.c = { name, image, securityContext: restrictedContainer() };
  }
  pullPolicy(policy: PullPolicy): this {
    this.c.imagePullPolicy = policy;
    return this;
  }
  command(command: string[]): this {
    this.c.command = [...command];
    return this;
  }
  args(args: string[]): this {
    this.c.args = [...args];
    return this;
  }
  /** A named TCP port. */
  port(name: string, port: number): this {
    (this.c.ports ??= []).push({ name, containerPort: port, protocol: "TCP" });
    return this;
  }
  /** An environment variable with a literal value. */
  env(name: string, value: string): this {
    (this.c.env ??= []).push({ name, value });
    return this;
  }
  /** An environment variable from the pod's own fields, e.g. `metadata.name`. */
  envFromField(name: string, fieldPath: string): this {
    (this.c.env ??= []).push({ name, valueFrom: { fieldRef: { fieldPath } } });
    return this;
  }
  /** Mount volume `volume` at `path`. */
  mount(volume: string, path: string, readOnly: boolean): this {
    (this.c.volumeMounts ??= []).push({ name: volume, mountPath: path, readOnly: readOnly ? true : undefined });
    return this;
  }
  readiness(probe: Probe): this {
    this.c.readinessProbe = probe;
    return this;
  }
  liveness(probe: Probe): this {
    this.c.livenessProbe = probe;
    return this;
  }
  resources(resources: Resources): this {
    this.c.resources = resourceRequirements(resources);
    return this;
  }
  build(): Container {
    return this.c;
  }
}

/** A probe that succeeds when the named port accepts TCP connections. */
export function tcpProbe(port: string, initialDelaySeconds: number, periodSeconds: number): Probe {
  return { tcpSocket: { port }, initialDelaySeconds, periodSeconds, failureThreshold: 3 };
}

/** A probe that runs `command` in the container. */
export function execProbe(command: string[], initialDelaySeconds: number, periodSeconds: number): Probe {
  return { exec: { command: [...command] }, initialDelaySeconds, periodSeconds, failureThreshold: 3 };
}

/**
 * Spread pods matching `selectorLabels` across `topologyKey` domains;
 * `required` makes it a scheduling constraint rather than a preference.
 */
export function antiAffinity(selectorLabels: Labels, topologyKey: string, required: boolean): Affinity {
  const term: PodAffinityTerm = { labelSelector: selector(selectorLabels), topologyKey };
  return {
    podAntiAffinity: required
      ? { requiredDuringSchedulingIgnoredDuringExecution: [term] }
      : { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: term }] },
  };
}

/** Builds the pod template shared by StatefulSets and Deployments, `restricted` by default. */
export class PodBuilder {
  private spec: PodSpec = { automountServiceAccountToken: false, containers: [] };
  private user: [number, number] = [DEFAULT_USER, DEFAULT_USER];

  /** Pods carrying `labels` (which must include the workload's selector). */
  constructor(private readonly labelMap: Labels) {}

  container(container: Container): this {
    this.spec.containers.push(container);
    return this;
  }
  /** Volume `name` holding ConfigMap `configMap`'s keys as files. */
  configMapVolume(name: string, configMap: string): this {
    (this.spec.volumes ??= []).push({ name, configMap: { name: configMap } });
    return this;
  }
  /** Volume `name` that lives as long as the pod. */
  emptyDirVolume(name: string): this {
    (this.spec.volumes ??= []).push({ name, emptyDir: {} });
    return this;
  }
  affinity(affinity: Affinity): this {
    this.spec.affinity = affinity;
    return this;
  }
  /** Grace period for shutdown, so replicas can leave a quorum cleanly. */
  terminationGracePeriod(seconds: number): this {
    this.spec.terminationGracePeriodSeconds = seconds;
    return this;
  }
  /** Run as `uid`:`gid` (non-zero), the user an image's files belong to; volumes get group `gid`. */
  runAs(uid: number, gid: number): this {
    this.user = [uid, gid];
    return this;
  }
  build(): PodTemplateSpec {
    const [uid, gid] = this.user;
    // On each container too, so a Database's spec.pod.securityContext
    // (which replaces the pod's) leaves the user in place.
    for (const container of this.spec.containers) {
      const context = (container.securityContext ??= {});
      context.runAsUser ??= uid;
      context.runAsGroup ??= gid;
    }
    this.spec.securityContext = {
      runAsNonRoot: true,
      runAsUser: uid,
      runAsGroup: gid,
      fsGroup: gid,
      seccompProfile: { type: "RuntimeDefault" },
    };
    return { metadata: { labels: { ...this.labelMap } }, spec: this.spec };
  }
}

/** `RollingUpdate` over every ordinal, one pod at a time. */
export function statefulsetStrategy(): StatefulSetUpdateStrategy {
  return { type: "RollingUpdate", rollingUpdate: { partition: 0 } };
}

/** `RollingUpdate` with `maxUnavailable: 0` and `maxSurge: 1`. */
export function deploymentStrategy(): DeploymentStrategy {
  return { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } };
}

/**
 * Builds a {@link StatefulSet} with parallel pod management, rolling updates
 * one pod at a time and PVCs retained on deletion and scale-down.
 */
export class StatefulSetBuilder {
  private replicaCount = 1;
  private claims: PersistentVolumeClaim[] = [];

  /** `name` selecting pods by `selectorLabels`, governed by headless Service `serviceName`. */
  constructor(
    private readonly name: string,
    private readonly selectorLabels: Labels,
    private readonly serviceName: string,
    private readonly pod: PodTemplateSpec,
  ) {}

  replicas(replicas: number): this {
    this.replicaCount = replicas;
    return this;
  }
  /** A PersistentVolumeClaim template, one claim per replica. */
  volumeClaim(claim: PersistentVolumeClaim): this {
    this.claims.push(claim);
    return this;
  }
  build(): StatefulSet {
    const claims = this.claims.length > 0;
    return {
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: meta(this.name, this.selectorLabels),
      spec: {
        replicas: this.replicaCount,
        selector: selector(this.selectorLabels),
        serviceName: this.serviceName,
        podManagementPolicy: "Parallel",
        updateStrategy: statefulsetStrategy(),
        template: this.pod,
        persistentVolumeClaimRetentionPolicy: claims ? { whenDeleted: "Retain", whenScaled: "Retain" } : undefined,
        // k8s-openapi's template type is the whole claim; its apiVersion
        // and kind are written as in the Rust SDK.
        volumeClaimTemplates: claims ? this.claims : undefined,
      },
    };
  }
}

/** A {@link Deployment} of `replicas` stateless pods, rolled out surge-first. */
export function deployment(name: string, selectorLabels: Labels, replicas: number, pod: PodTemplateSpec): Deployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(name, selectorLabels),
    spec: { replicas, selector: selector(selectorLabels), template: pod, strategy: deploymentStrategy() },
  };
}

/** Builds a {@link Service}. */
export class ServiceBuilder {
  private labelMap: Labels;
  private ports: ServicePort[] = [];
  private isHeadless = false;

  /** Service `name` routing to pods matching `selector`; it carries the selector labels too. */
  constructor(
    private readonly name: string,
    private readonly selectorLabels: Labels,
  ) {
    this.labelMap = { ...selectorLabels };
  }

  /** An extra label on the Service itself (not part of the selector). */
  label(key: string, value: string): this {
    this.labelMap[key] = value;
    return this;
  }
  /** A TCP port forwarding to the pods' port of the same name. */
  port(name: string, port: number): this {
    this.ports.push({ name, port, targetPort: name, protocol: "TCP" });
    return this;
  }
  /** Headless (`clusterIP: None`), publishing not-ready addresses so replicas find each other before they are ready. */
  headless(): this {
    this.isHeadless = true;
    return this;
  }
  build(): Service {
    return {
      apiVersion: "v1",
      kind: "Service",
      metadata: meta(this.name, this.labelMap),
      spec: {
        selector: { ...this.selectorLabels },
        ports: this.ports,
        clusterIP: this.isHeadless ? "None" : undefined,
        publishNotReadyAddresses: this.isHeadless ? true : undefined,
      },
    };
  }
}

/** A {@link ConfigMap} holding `data` (file name → contents). */
export function configMap(name: string, labelMap: Labels, data: Iterable<[string, string]>): ConfigMap {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: meta(name, labelMap), data: Object.fromEntries(data) };
}

/** A ReadWriteOnce claim template named `name` requesting `size`, in `storageClass` or the cluster default. */
export function volumeClaim(name: string, size: string, storageClass?: string): PersistentVolumeClaim {
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name },
    spec: { accessModes: ["ReadWriteOnce"], storageClassName: storageClass, resources: { requests: { storage: size } } },
  };
}

/** `volumeClaimTemplate` as users write it in config. */
export interface VolumeClaimConfig {
  size: string;
  storageClassName?: string;
}

/** Violations of a {@link VolumeClaimConfig} at config path `path`. */
export function checkVolumeClaim(config: VolumeClaimConfig, path: string): Violation[] {
  const problem = quantity.check(config.size);
  return problem === undefined ? [] : [configViolation(`${path}.size`, problem)];
}

/** A PodDisruptionBudget keeping at least `minAvailable` pods up. */
export function podDisruptionBudget(name: string, selectorLabels: Labels, minAvailable: number): PodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: meta(name, selectorLabels),
    spec: { minAvailable, selector: selector(selectorLabels) },
  };
}

/** A PodDisruptionBudget letting at most `maxUnavailable` pods be down at once. */
export function podDisruptionBudgetMaxUnavailable(
  name: string,
  selectorLabels: Labels,
  maxUnavailable: number,
): PodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: meta(name, selectorLabels),
    spec: { maxUnavailable, selector: selector(selectorLabels) },
  };
}
