// The cache plugin's component entry (built by `npm run build:cache`).
import { exportPlugin } from "../../src/component.js";
import { cache } from "./plugin.js";

export const { metadata, validate, render, status } = exportPlugin(cache);
