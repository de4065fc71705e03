/**
 * JSON text of Kubernetes objects exactly as the Rust SDK writes it
 * (serde_json over k8s-openapi): `apiVersion` and `kind` first, then every
 * other field of every object in ascending order of its Rust field name
 * (the snake_case of the JSON name), with no whitespace. Maps (labels, data)
 * are ordered the same way, as Rust's BTreeMap orders them, so the same
 * logical object is the same bytes in both languages.
 *
 * `undefined` fields are left out, as Rust leaves out `None`.
 */

/** The name k8s-openapi gives a JSON field in Rust, which decides its order. */
function rustName(key: string): string {
  if (key === "type") return "type_";
  return key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

/** Byte order of UTF-8 strings, as Rust compares `String`s. */
function compareBytes(a: string, b: string): number {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) {
    if (ea[i] !== eb[i]) return ea[i]! - eb[i]!;
  }
  return ea.length - eb.length;
}

/** `a` sorts before `b` as Rust orders fields: by Rust name. */
function compareFields(a: string, b: string): number {
  return compareBytes(rustName(a), rustName(b)) || compareBytes(a, b);
}

function encode(value: unknown, top: boolean): string | undefined {
  if (value === undefined || typeof value === "function") return undefined;
  if (value === null) return "null";
  if (Array.isArray(value)) {
    return "[" + value.map((v) => encode(v, false) ?? "null").join(",") + "]";
  }
  if (typeof value === "object") {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).filter((k) => record[k] !== undefined);
    const first = top ? ["apiVersion", "kind"].filter((k) => keys.includes(k)) : [];
    const rest = keys.filter((k) => !first.includes(k)).sort(compareFields);
    const parts: string[] = [];
    for (const k of [...first, ...rest]) {
      const v = encode(record[k], false);
      if (v !== undefined) parts.push(JSON.stringify(k) + ":" + v);
    }
    return "{" + parts.join(",") + "}";
  }
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new Error(`cannot encode ${value} as JSON`);
  }
  if (typeof value === "bigint") return value.toString();
  return JSON.stringify(value);
}

/** The JSON text of a Kubernetes object, byte-identical to the Rust SDK's. */
export function objectJson(object: object): string {
  return encode(object, true)!;
}

/**
 * JSON for files humans read (a ConfigMap's `cluster.json`), as serde_json's
 * pretty printer writes it: two-space indent, fields in the order given.
 */
export function pretty(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
