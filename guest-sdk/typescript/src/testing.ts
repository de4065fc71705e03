/**
 * A native harness for plugin unit tests (`node --test`, no wasm): runs a
 * plugin through the same functions the component exports and decodes the
 * JSON it produced, so tests assert on objects, not strings.
 */

import * as dispatch from "./plugin.js";
import type { Plugin } from "./plugin.js";
import type { Database, PartitionBinding, RenderError, StatusReport, Violation } from "./types.js";

type Json = Record<string, any>;

/** A render's output: the JSON text as the component returns it, and decoded. */
export class Objects {
  constructor(
    readonly texts: string[],
    readonly partitions: PartitionBinding[],
  ) {}

  get objects(): Json[] {
    return this.texts.map((t) => JSON.parse(t) as Json);
  }

  /** Names of the objects of `kind`, in render order. */
  names(kind: string): string[] {
    return this.objects.filter((o) => o["kind"] === kind).map((o) => o["metadata"]["name"] as string);
  }

  /** The object of `kind` named `name`; throws listing what exists if absent. */
  get(kind: string, name: string): Json {
    const found = this.objects.find((o) => o["kind"] === kind && o["metadata"]?.["name"] === name);
    if (found === undefined) throw new Error(`no ${kind} ${name}; have ${JSON.stringify(this.names(kind))}`);
    return found;
  }
}

/** Render `db` with `plugin`; throws the render error (violations or failure) as {@link RenderFailed}. */
export function render<C>(plugin: Plugin<C>, db: Database): Objects {
  const r = dispatch.render(plugin, db);
  if ("err" in r) throw new RenderFailed(r.err);
  return new Objects(r.ok.objects, r.ok.partitions);
}

/** A render that returned an error. */
export class RenderFailed extends Error {
  constructor(readonly error: RenderError) {
    super(error.tag === "invalid" ? error.violations.map((v) => `${v.field}: ${v.message}`).join("; ") : error.message);
  }
}

/** The violations `plugin` reports for `db` (empty if valid). */
export function violations<C>(plugin: Plugin<C>, db: Database): Violation[] {
  return dispatch.validate(plugin, db);
}

/** `plugin`'s status over `observed` objects. */
export function status<C>(plugin: Plugin<C>, db: Database, observed: object[]): StatusReport {
  return dispatch.status(plugin, db, observed.map((o) => JSON.stringify(o)));
}

/** `object` as the API server would report it with `status` merged in. */
export function withStatus(object: object, status: object): object {
  return { ...object, status };
}
