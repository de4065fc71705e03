// The module jco componentize builds (`npm run component`): exports the plugin.
import { exportPlugin } from "@atoll/guest/component";
import { thePlugin } from "./plugin.js";

export const { metadata, validate, render, status } = exportPlugin(thePlugin);
