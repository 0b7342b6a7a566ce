// Live cell count on the "LTX LoRA Sweep" node: while its widgets and links are edited, the server counts the cells
// (GET /ltxlora/sweep_count, the same count the node's queue-time validation checks) and the node shows
// "N cells (max M)" under itself, or in red the message queueing would give.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "LtxLoraSweep";
const ROUTE = "/ltxlora/sweep_count";
const WIDGETS = ["loras", "strengths", "seeds", "max_cells", "prompts", "trigger"];
const COUNTED = ["loras", "strengths", "seeds", "max_cells", "prompts"]; // as COUNTED_WIDGETS in nodes/sweep.py
const DEBOUNCE_MS = 300;
const LINE_HEIGHT = 14;
const COLORS = { ok: "#9c9", error: "#f66" };

const isLinked = (input) => input.link != null;

/** The route's query for the node's current state, or null when a linked widget makes the count unknown here. */
function query(node) {
  const inputs = node.inputs ?? [];
  if (inputs.some((i) => isLinked(i) && COUNTED.includes(i.widget?.name))) return null;
  const params = new URLSearchParams();
  for (const name of WIDGETS) {
    const w = node.widgets?.find((w) => w.name === name);
    if (w) params.set(name, String(w.value ?? ""));
  }
  params.set("n_inputs", String(inputs.filter((i) => i.type === "CONDITIONING" && isLinked(i)).length));
  params.set("clip", inputs.some((i) => i.name === "clip" && isLinked(i)) ? "1" : "0");
  return params.toString();
}

function show(node, text, error) {
  node.ltxCellText = text; // read by the browser test as well as drawn
  node.ltxCellError = error;
  node.setDirtyCanvas?.(true, false);
}

async function fetchCount(node, q) {
  let text, error;
  try {
    const res = await api.fetchApi(`${ROUTE}?${q}`);
    const r = await res.json();
    error = r.error != null;
    text = error ? r.error : `${r.cells} cells (max ${r.max_cells})`;
  } catch (err) {
    [text, error] = [`cell count unavailable: ${err.message}`, true]; // best effort: the count is a hint
  }
  if (node.ltxCellQuery === q) show(node, text, error); // else a newer edit's answer is on its way
}

/** Asks for the count DEBOUNCE_MS after the node's values or links last changed. */
function refresh(node) {
  const q = query(node);
  if (q === node.ltxCellQuery) return;
  node.ltxCellQuery = q;
  clearTimeout(node.ltxCellTimer);
  if (q === null) show(node, "cells counted when queued (a counted widget is linked)", false);
  else node.ltxCellTimer = setTimeout(() => fetchCount(node, q), DEBOUNCE_MS);
}

function wrap(ctx, text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  return line ? [...lines, line] : lines;
}

function draw(node, ctx) {
  if (!node.ltxCellText || node.flags?.collapsed) return;
  ctx.save();
  ctx.font = "12px sans-serif";
  ctx.fillStyle = node.ltxCellError ? COLORS.error : COLORS.ok;
  wrap(ctx, node.ltxCellText, Math.max(node.size[0] - 12, 80)).forEach((line, i) =>
    ctx.fillText(line, 6, node.size[1] + LINE_HEIGHT * (i + 1))
  );
  ctx.restore();
}

app.registerExtension({
  name: "ltxlora.SweepCellCount",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    // Every hook ends in refresh, which asks the server only when the values or links really changed.
    for (const hook of ["onNodeCreated", "onConfigure", "onConnectionsChange", "onWidgetChanged"]) {
      const original = nodeType.prototype[hook];
      nodeType.prototype[hook] = function () {
        const out = original?.apply(this, arguments);
        refresh(this);
        return out;
      };
    }
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const out = onDrawForeground?.apply(this, arguments);
      refresh(this); // values also change without a hook (text areas, undo, other extensions)
      draw(this, ctx);
      return out;
    };
  },
});
