/**
 * Kubernetes resource quantities (`1Gi`, `500m`, `64Mi`), checked early so a
 * typo is a validation error naming the field. Same rules and messages as
 * the Rust SDK's `quantity` module.
 */

const SUFFIXES = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "", "k", "M", "G", "T", "P", "E"];

/** `undefined` when `s` is a Kubernetes quantity, else a message quoting it. */
export function check(s: string): string | undefined {
  const bad = `\`${s}\` is not a Kubernetes quantity; use a number with an optional unit such as 512Mi, 10Gi or 500m`;
  let end = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (!((c >= "0" && c <= "9") || c === "." || (i === 0 && c === "+"))) {
      end = i;
      break;
    }
  }
  const number = s.slice(0, end).replace(/^\++/, "");
  const suffix = s.slice(end);
  if (number === "" || number === "." || number.split(".").length - 1 > 1) return bad;
  const exponent = /^[eE][+-]?[0-9]+$/.test(suffix);
  return SUFFIXES.includes(suffix) || exponent ? undefined : bad;
}

const UNITS: [string, number][] = [
  ["Ki", 1024], ["Mi", 1048576], ["Gi", 1073741824], ["Ti", 1099511627776],
  ["Pi", 1125899906842624], ["Ei", 1152921504606846976],
  ["n", 1e-9], ["u", 1e-6], ["m", 1e-3], ["k", 1e3], ["M", 1e6], ["G", 1e9],
  ["T", 1e12], ["P", 1e15], ["E", 1e18],
];

/** The value of quantity `s`, e.g. `64Mi` → 67108864, `500m` → 0.5; throws a message if not a quantity. */
export function value(s: string): number {
  const problem = check(s);
  if (problem !== undefined) throw new Error(problem);
  const t = s.replace(/^\++/, "");
  for (const [suffix, multiplier] of UNITS) {
    if (t.endsWith(suffix)) return Number(t.slice(0, -suffix.length)) * multiplier;
  }
  return Number(t);
}
