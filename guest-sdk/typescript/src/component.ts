/**
 * The component glue: the four exports of the `atoll:storage/plugin` world
 * over a {@link Plugin}, converting between the WIT types (generated into
 * `gen/` from `wit/` by `npm run gen`) and the SDK's. A plugin's component
 * entry is one line:
 *
 * ```ts
 * export const { metadata, validate, render, status } = exportPlugin(myPlugin);
 * ```
 *
 * Only the component imports this module (through `log.ts`, which reaches
 * the host's `log` import); unit tests use `testing.ts`.
 */

/// <reference path="../gen/plugin.d.ts" />
import type * as wit from "atoll:storage/types@0.3.0";
import * as dispatch from "./plugin.js";
import type { Plugin } from "./plugin.js";
import { Database, type Violation } from "./types.js";

function database(db: wit.Database): Database {
  const d = new Database(db.name, db.partitions);
  d.namespace = db.namespace;
  d.uid = db.uid;
  d.generation = db.generation;
  d.labels = Object.fromEntries(db.labels);
  d.config = db.config;
  d.clusterDomain = db.clusterDomain;
  return d;
}

function violations(v: Violation[]): wit.Violation[] {
  return v.map(({ field, message }) => ({ field, message }));
}

/** The world's exports for `plugin`. An `err` result is thrown as `{ payload }`, which the bindings return as `err(payload)`. */
export function exportPlugin<C>(plugin: Plugin<C>) {
  return {
    metadata(): wit.Metadata {
      return dispatch.metadata(plugin);
    },
    validate(db: wit.Database): void {
      const v = dispatch.validate(plugin, database(db));
      if (v.length > 0) throw { payload: violations(v) };
    },
    render(db: wit.Database): wit.Rendered {
      const r = dispatch.render(plugin, database(db));
      if ("err" in r) {
        throw {
          payload:
            r.err.tag === "invalid"
              ? { tag: "invalid", val: violations(r.err.violations) }
              : { tag: "failed", val: r.err.message },
        };
      }
      return {
        objects: r.ok.objects,
        partitions: r.ok.partitions.map((b) => ({
          partition: b.partition,
          service: b.service,
          port: b.port,
          placement:
            b.placement.tag === "nowhere"
              ? { tag: "nowhere" }
              : { tag: "workload", val: { kind: b.placement.kind, name: b.placement.name } },
        })),
      };
    },
    status(db: wit.Database, observed: string[]): wit.StatusReport {
      const r = dispatch.status(plugin, database(db), observed);
      // WIT list<u32> is a Uint32Array in the bindings.
      return {
        readyPartitions: Uint32Array.from(r.readyPartitions),
        availablePartitions: Uint32Array.from(r.availablePartitions),
        message: r.message,
      };
    },
  };
}
