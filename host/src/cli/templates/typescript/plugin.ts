/**
 * {{name}}: one StatefulSet of `replicas` pods, a headless Service for
 * their DNS names, and one Service per partition in front of them.
 */

import { c, configViolation, k8s, Placement, type Plugin, type Violation } from "@atoll/guest";

/** `spec.storage.config` of a {{name}} Database. */
const Config = c.struct("Config", "`spec.storage.config` of a {{name}} Database.", {
  replicas: c.field(c.u32(), { default: 1, description: "Pods serving every partition, at least 1." }),
  image: c.field(c.string(), { default: "registry.example/{{name}}:0.1.0", description: "Container image of the pods." }),
});
type Config = c.Infer<typeof Config>;

export const thePlugin: Plugin<Config> = {
  name: "{{name}}",
  version: "0.1.0",
  description: "{{name}}: a StatefulSet and a Service per partition",
  config: Config,

  check(_db, config): Violation[] {
    return config.replicas === 0 ? [configViolation("replicas", "must be at least 1 (got 0)")] : [];
  },

  render(db, config, out) {
    const labels = k8s.labels([["app.kubernetes.io/name", thePlugin.name], ["atoll.dev/database", db.name]]);
    const hs = db.child("hs");
    out.push(new k8s.ServiceBuilder(hs, labels).port("api", 5678).headless().build());
    const container = new k8s.ContainerBuilder("server", config.image).port("api", 5678).readiness(k8s.tcpProbe("api", 5, 10)).build();
    const pod = new k8s.PodBuilder(labels).container(container).build();
    out.push(new k8s.StatefulSetBuilder(db.name, labels, hs, pod).replicas(config.replicas).build());
    for (const p of db.partitionIds()) {
      const name = db.child(`p${p}`);
      out.push(new k8s.ServiceBuilder(name, labels).port("api", 5678).build());
      // Nothing on disk: say so, or name the StatefulSet that holds data.
      out.bind(p, name, 5678, Placement.nowhere);
    }
  },

  status(db, config, observed) {
    const want = config.replicas;
    const ready = observed.statefulsetReady(db.name, want);
    const all = ready >= want ? db.partitionIds() : [];
    return { readyPartitions: all, availablePartitions: [...all], message: `${ready}/${want} replicas ready` };
  },
};
