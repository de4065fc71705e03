/**
 * `spec.storage.config`: one declaration gives both the parser (with
 * violations naming the field path, worded as the Rust SDK's serde errors)
 * and the published JSON Schema (laid out as schemars lays out the Rust
 * SDK's), so a TypeScript plugin validates and describes its config like a
 * Rust one.
 *
 * ```ts
 * const PullPolicy = c.enumeration("PullPolicy", "...", ["Always", "IfNotPresent", "Never"]);
 * const Config = c.struct("Config", "`spec.storage.config` of a cache Database.", {
 *   partitionsPerNode: c.field(c.u32(), { default: 1, description: "..." }),
 *   imagePullPolicy: c.field(PullPolicy, { default: "IfNotPresent" }),
 * });
 * type Config = c.Infer<typeof Config>;
 * ```
 */

import { configViolation, type Database, type Violation } from "./types.js";

/** A config type: parses JSON values and describes itself as JSON Schema. */
export interface Type<T> {
  /** serde's name of what it expects, e.g. `a string`, `u32`, `struct Config`. */
  readonly expected: string;
  /** Parse `value` at `path` (dot-separated, `""` at the root). */
  parse(value: unknown, path: string): T;
  /** Absent or null is allowed (an `Option`): never a required field. */
  readonly optional?: boolean;
  /** Its JSON Schema, registering named definitions in `defs`. */
  schema(defs: Map<string, object>): Record<string, unknown>;
}

/** The TypeScript type a config type parses to. */
export type Infer<C> = C extends Type<infer T> ? T : never;

/** A config value that does not fit its type: the field path and serde's message. */
export class ConfigError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** serde's description of an unexpected JSON value: `integer \`3\``, `string "x"`, `map`. */
function unexpected(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return `boolean \`${value}\``;
  if (typeof value === "number") {
    return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
  }
  if (typeof value === "string") return `string ${JSON.stringify(value)}`;
  if (Array.isArray(value)) return "sequence";
  return "map";
}

function invalidType(value: unknown, expected: string, path: string): never {
  throw new ConfigError(path, `invalid type: ${unexpected(value)}, expected ${expected}`);
}

/** serde's list of what was expected: `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` ``. */
function oneOf(names: readonly string[]): string {
  const q = names.map((n) => `\`${n}\``);
  if (q.length === 1) return q[0]!;
  if (q.length === 2) return `${q[0]} or ${q[1]}`;
  return `one of ${q.join(", ")}`;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** A string. */
export function string(): Type<string> {
  return {
    expected: "a string",
    parse(value, path) {
      return typeof value === "string" ? value : invalidType(value, "a string", path);
    },
    schema: () => ({ type: "string" }),
  };
}

/** An unsigned 32-bit integer. */
export function u32(): Type<number> {
  return {
    expected: "u32",
    parse(value, path) {
      if (typeof value !== "number" || !Number.isInteger(value)) return invalidType(value, "u32", path);
      if (value < 0 || value > 4294967295) {
        throw new ConfigError(path, `invalid value: integer \`${value}\`, expected u32`);
      }
      return value;
    },
    schema: () => ({ type: "integer", format: "uint32", minimum: 0 }),
  };
}

/** A boolean. */
export function boolean(): Type<boolean> {
  return {
    expected: "a boolean",
    parse(value, path) {
      return typeof value === "boolean" ? value : invalidType(value, "a boolean", path);
    },
    schema: () => ({ type: "boolean" }),
  };
}

/** A map from string keys to `values` (a Rust `BTreeMap<String, _>`). */
export function map<T>(values: Type<T>): Type<Record<string, T>> {
  return {
    expected: "a map",
    parse(value, path) {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        return invalidType(value, "a map", path);
      }
      const out: Record<string, T> = {};
      for (const [k, v] of Object.entries(value)) out[k] = values.parse(v, join(path, k));
      return out;
    },
    schema: (defs) => ({ type: "object", additionalProperties: values.schema(defs) }),
  };
}

/** `value` or `null`/absent (a Rust `Option`). */
export function optional<T>(inner: Type<T>): Type<T | undefined> {
  return {
    expected: inner.expected,
    optional: true,
    parse(value, path) {
      return value === null || value === undefined ? undefined : inner.parse(value, path);
    },
    schema(defs) {
      const s = inner.schema(defs);
      return typeof s["type"] === "string" ? { ...s, type: [s["type"], "null"] } : { anyOf: [s, { type: "null" }] };
    },
  };
}

/** A named string enumeration (a Rust unit enum), published under `$defs`. */
export function enumeration<V extends string>(name: string, description: string, variants: readonly V[]): Type<V> {
  return {
    expected: `enum ${name}`,
    parse(value, path) {
      // serde_json reads an enum from a string (or a map); anything else
      // fails before serde sees a type.
      if (typeof value !== "string") throw new ConfigError(path, "expected value");
      if (!variants.includes(value as V)) {
        throw new ConfigError(path, `unknown variant \`${value}\`, expected ${oneOf(variants)}`);
      }
      return value as V;
    },
    schema(defs) {
      defs.set(name, { description, type: "string", enum: [...variants] });
      return { $ref: `#/$defs/${name}` };
    },
  };
}

/** A struct field: its type, and optionally its default (absent fields take it) and description. */
export interface Field<T> {
  type: Type<T>;
  default?: T;
  description?: string;
}

/** Declare a field. */
export function field<T>(type: Type<T>, options: { default?: T; description?: string } = {}): Field<T> {
  return { type, ...options };
}

type Fields = Record<string, Field<unknown>>;
type StructOf<F extends Fields> = { [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/**
 * A named struct with unknown fields refused (`deny_unknown_fields`); a
 * field without a default is required. The root config's name is the
 * schema's `title`; nested structs are published under `$defs`.
 */
export function struct<F extends Fields>(name: string, description: string, fields: F): Type<StructOf<F>> & { root(): object } {
  const names = Object.keys(fields);
  const expected = `struct ${name}`;
  const body = (defs: Map<string, object>) => {
    const properties: Record<string, unknown> = {};
    for (const key of [...names].sort()) {
      const f = fields[key]!;
      const s = f.type.schema(defs);
      const entry: Record<string, unknown> = {};
      if (f.description !== undefined) entry["description"] = f.description;
      const { minimum, ...rest } = s as Record<string, unknown>;
      Object.assign(entry, rest);
      if (f.default !== undefined) entry["default"] = f.default;
      if (minimum !== undefined) entry["minimum"] = minimum;
      properties[key] = entry;
    }
    const required = names.filter((k) => fields[k]!.default === undefined && !fields[k]!.type.optional);
    const out: Record<string, unknown> = { description, type: "object", properties };
    if (required.length > 0) out["required"] = required;
    out["additionalProperties"] = false;
    return out;
  };
  // serde also reads a struct from a JSON array, fields by position; the
  // ones left out take their defaults.
  const fromSequence = (items: unknown[], path: string): StructOf<F> => {
    if (items.length > names.length) {
      throw new ConfigError(path, `invalid length ${items.length}, expected fewer elements in array`);
    }
    const out: Record<string, unknown> = {};
    names.forEach((key, i) => {
      const f = fields[key]!;
      if (i < items.length) out[key] = f.type.parse(items[i], join(path, String(i)));
      else if (f.default !== undefined) out[key] = structuredClone(f.default);
      else if (!f.type.optional) {
        throw new ConfigError(path, `invalid length ${items.length}, expected ${expected} with ${names.length} elements`);
      }
    });
    return out as StructOf<F>;
  };
  return {
    expected,
    parse(value, path) {
      if (Array.isArray(value)) return fromSequence(value, path);
      if (value === null || typeof value !== "object") return invalidType(value, expected, path);
      const record = value as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(record)) {
        if (!names.includes(key)) {
          const allowed = names.length === 0 ? "there are no fields" : `expected ${oneOf(names)}`;
          throw new ConfigError(join(path, key), `unknown field \`${key}\`, ${allowed}`);
        }
      }
      for (const key of names) {
        const f = fields[key]!;
        if (key in record) {
          out[key] = f.type.parse(record[key], join(path, key));
        } else if (f.default !== undefined) {
          out[key] = structuredClone(f.default);
        } else if (!f.type.optional) {
          throw new ConfigError(path, `missing field \`${key}\``);
        }
      }
      return out as StructOf<F>;
    },
    schema(defs) {
      defs.set(name, body(defs));
      return { $ref: `#/$defs/${name}` };
    },
    root() {
      const defs = new Map<string, object>();
      const { description: d, ...rest } = body(defs);
      const schema: Record<string, unknown> = {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        title: name,
        description: d,
        ...rest,
      };
      if (defs.size > 0) {
        schema["$defs"] = Object.fromEntries([...defs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
      }
      return schema;
    },
  };
}

/**
 * Parse a Database's config, naming the offending field on error. Absent or
 * `null` config parses as `{}`.
 */
export function parseConfig<T>(type: Type<T>, db: Database): { ok: T } | { err: Violation } {
  const text = db.config.trim();
  let value: unknown;
  try {
    value = text === "" || text === "null" ? {} : JSON.parse(text);
  } catch (e) {
    return { err: configViolation("", `not JSON: ${(e as Error).message}`) };
  }
  try {
    return { ok: type.parse(value, "") };
  } catch (e) {
    if (e instanceof ConfigError) return { err: configViolation(e.path, e.message) };
    throw e;
  }
}

/** The JSON Schema of a root config struct, as JSON text (compact, like the Rust SDK's). */
export function configSchema(type: { root(): object }): string {
  return JSON.stringify(type.root());
}
