/**
 * A storage plugin as plain TypeScript, and the four contract functions
 * over it. The component exports (`component.ts`) and the native test
 * harness (`testing.ts`) both call these, so a unit test runs exactly the
 * code the component runs.
 */

import { configSchema, parseConfig, type Type } from "./config.js";
import { Observed, Output } from "./output.js";
import {
  specViolation, violationText, type Database, type Metadata, type RenderError, type Rendered, type StatusReport,
  type Violation,
} from "./types.js";

/** A storage plugin: domain logic only; the SDK parses config and encodes output. */
export interface Plugin<C> {
  /** The name Databases use in `spec.storage.plugin`. */
  name: string;
  /** Semantic version. */
  version: string;
  /** One line for humans. */
  description: string;
  /** `spec.storage.config`, declared with `config.ts`. */
  config: Type<C> & { root(): object };
  /** Checks beyond the config type (ranges, relations): every violation. */
  check?(db: Database, config: C): Violation[];
  /** Push the objects and one binding per partition; return an error message to fail. Only called when valid. */
  render(db: Database, config: C, out: Output): string | void;
  /** Which partitions are ready, from the observed objects. Only called when valid. */
  status(db: Database, config: C, observed: Observed): StatusReport;
}

/** `metadata()`. */
export function metadata<C>(p: Plugin<C>): Metadata {
  return { name: p.name, version: p.version, description: p.description, configSchema: configSchema(p.config) };
}

function parsed<C>(p: Plugin<C>, db: Database): { ok: C } | { err: Violation[] } {
  const result = parseConfig(p.config, db);
  if ("err" in result) return { err: [result.err] };
  const violations: Violation[] = [];
  if (db.partitions === 0) violations.push(specViolation("partitions", "must be at least 1"));
  violations.push(...(p.check?.(db, result.ok) ?? []));
  return violations.length === 0 ? { ok: result.ok } : { err: violations };
}

/** `validate(db)`: every violation, or none. */
export function validate<C>(p: Plugin<C>, db: Database): Violation[] {
  const r = parsed(p, db);
  return "err" in r ? r.err : [];
}

/** `render(db)`: refuses an invalid Database before rendering anything. */
export function render<C>(p: Plugin<C>, db: Database): { ok: Rendered } | { err: RenderError } {
  const r = parsed(p, db);
  if ("err" in r) return { err: { tag: "invalid", violations: r.err } };
  const out = new Output();
  const failure = p.render(db, r.ok, out);
  if (typeof failure === "string") return { err: { tag: "failed", message: failure } };
  return { ok: out.finish() };
}

/** `status(db, observed)`: with an invalid config, nothing is ready. */
export function status<C>(p: Plugin<C>, db: Database, observed: string[]): StatusReport {
  const r = parsed(p, db);
  if ("err" in r) {
    return { readyPartitions: [], availablePartitions: [], message: `invalid config: ${r.err.map(violationText).join("; ")}` };
  }
  return p.status(db, r.ok, Observed.parse(observed));
}
