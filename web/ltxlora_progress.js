// Live training view on the "Train LTX LoRA" node: loss chart (raw and smoothed), step, s/step, ETA, GPU memory.
// Fed by the server event `ltxlora.progress` (one per optimizer step) and `ltxlora.progress.end` (how the run
// ended: the ETA then gives way to "done", "cancelled at step N", ...). The current run's history is kept on the
// server (GET /ltxlora/progress), so a page reload mid-run redraws everything recorded so far and carries on.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "LtxLoraTrain";
const EVENT = "ltxlora.progress";
const END_EVENT = "ltxlora.progress.end";
const ROUTE = "/ltxlora/progress";
const SMOOTHING = 0.9; // EMA weight of the smoothed curve (bias-corrected, as TensorBoard does)
const CHART_HEIGHT = 200;
const COLORS = { raw: "rgba(120, 170, 255, 0.45)", smooth: "#ffb347", grid: "rgba(255,255,255,0.12)", text: "#ccc" };

// One run per Train node id: { run, total, status, points: [{step, loss, lr, seconds, wall_seconds, gpu_gib, gpu_source}] };
// status is null while the run goes on, then "completed", "cancelled", "diverged" or "failed".
const runs = new Map();

function runFor(nodeId) {
  return runs.get(String(nodeId));
}

function record(p) {
  const key = String(p.node);
  let r = runs.get(key);
  if (!r || r.run !== p.run) {
    r = { run: p.run, total: p.total, status: null, points: [] };
    runs.set(key, r);
  }
  r.total = p.total;
  const last = r.points[r.points.length - 1];
  if (!last || p.step > last.step) r.points.push(p); // the history fetch and live events may overlap
  return key;
}

function recordEnd(e) {
  const r = runFor(e.node);
  if (r?.run === e.run) r.status = e.status;
  return String(e.node);
}

function smoothed(values) {
  let ema = 0;
  return values.map((v, i) => {
    ema = SMOOTHING * ema + (1 - SMOOTHING) * v;
    return ema / (1 - SMOOTHING ** (i + 1));
  });
}

function formatSeconds(s) {
  if (!Number.isFinite(s)) return "–";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.round(s % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

/** [min, max] of `values` in one pass (spreading a long array into Math.min overflows the call stack). */
export function valueRange(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** How a run ended, in place of the ETA (the server's `ending_text` says the same under the node). */
function ending(status, step) {
  if (status === "completed") return "done";
  if (status === "cancelled") return `cancelled at step ${step}`;
  if (status === "diverged") return `stopped at step ${step}: the loss diverged`;
  return `failed at step ${step}`;
}

/**
 * Stats line: step, loss, s/step and ETA, the compute time per step (mean of the last 20 steps) and peak GPU
 * memory. s/step and ETA are wall-clock (`wall_seconds`, measured by the server between steps), so checkpoint
 * saves and previews count; compute time alone stands in until a second step is done. Once the run has ended
 * (`r.status`), how it ended stands where the ETA was.
 */
export function stats(r) {
  const pts = r.points;
  if (!pts.length) return "waiting for the first step…";
  const last = pts[pts.length - 1];
  const recent = pts.slice(-20);
  const compute = recent.reduce((a, p) => a + p.seconds, 0) / recent.length;
  const perStep = Number.isFinite(last.wall_seconds) ? last.wall_seconds : compute;
  const eta = (r.total - last.step) * perStep;
  const source = last.gpu_source ? ` (${last.gpu_source})` : "";
  const gpu = last.gpu_gib == null ? "n/a (CPU)" : `${last.gpu_gib.toFixed(1)} GiB${source}`;
  const done = r.status ? ending(r.status, last.step) : last.step >= r.total ? "done" : `ETA ${formatSeconds(eta)}`;
  return `step ${last.step}/${r.total} · loss ${last.loss.toFixed(4)} · ${perStep.toFixed(2)} s/step ` +
    `(${compute.toFixed(2)} compute) · ${done} · GPU ${gpu}`;
}

export function drawChart(canvas, r) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || CHART_HEIGHT - 24;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pts = r ? r.points.filter((p) => Number.isFinite(p.loss)) : [];
  if (pts.length < 1) return;
  const losses = pts.map((p) => p.loss), smooth = smoothed(losses);
  const [lo, hi] = valueRange(losses), span = hi - lo || Math.abs(hi) || 1;
  const pad = { l: 44, r: 6, t: 6, b: 14 };
  const x = (step) => pad.l + ((step - 1) / Math.max(1, r.total - 1)) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / span) * (h - pad.t - pad.b);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = COLORS.text;
  ctx.strokeStyle = COLORS.grid;
  for (const v of [lo, lo + span / 2, hi]) {
    ctx.beginPath();
    ctx.moveTo(pad.l, y(v));
    ctx.lineTo(w - pad.r, y(v));
    ctx.stroke();
    ctx.fillText(v.toPrecision(3), 2, y(v) + 3);
  }
  ctx.fillText(`step ${r.total}`, w - pad.r - 52, h - 2);
  const line = (values, color, width) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(pts[i].step), y(v)) : ctx.moveTo(x(pts[i].step), y(v))));
    ctx.stroke();
  };
  line(losses, COLORS.raw, 1);
  line(smooth, COLORS.smooth, 2);
}

function addChart(node) {
  const root = document.createElement("div");
  root.className = "ltxlora-chart";
  root.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;font:11px sans-serif;color:#ddd";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "flex:1;width:100%;min-height:0";
  const line = document.createElement("div");
  line.className = "ltxlora-chart-stats";
  line.style.cssText = "height:18px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
  root.append(canvas, line);
  const widget = node.addDOMWidget("ltxlora_chart", "ltxlora-chart", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => CHART_HEIGHT,
    getMaxHeight: () => CHART_HEIGHT,
  });
  widget.serialize = false; // not a setting: never in widgets_values or the prompt
  node.ltxloraChart = {
    root,
    redraw() {
      const r = runFor(node.id);
      root.dataset.points = r ? String(r.points.length) : "0";
      root.dataset.run = r?.run ?? "";
      line.textContent = r ? stats(r) : "no training run yet: the loss chart appears here while training";
      drawChart(canvas, r);
    },
  };
  node.ltxloraChart.redraw();
}

function redrawNode(nodeId) {
  const node = app.graph?.getNodeById?.(Number(nodeId)) ?? app.graph?.getNodeById?.(nodeId);
  node?.ltxloraChart?.redraw();
  app.graph?.setDirtyCanvas?.(true, false);
}

async function loadHistory() {
  const res = await api.fetchApi(ROUTE);
  if (!res.ok) return;
  const h = await res.json();
  if (!h.run) return;
  // Live events may have arrived while the history was in flight: keep those newer than the history.
  const key = String(h.node), live = runs.get(key);
  const newest = h.points.length ? h.points[h.points.length - 1].step : 0;
  const newer = live?.run === h.run ? live.points.filter((p) => p.step > newest) : [];
  const status = h.status ?? (live?.run === h.run ? live.status : null);
  runs.set(key, { run: h.run, total: h.total, status, points: [...h.points, ...newer] });
  redrawNode(h.node);
}

app.registerExtension({
  name: "ltxlora.LiveTrainingView",
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => redrawNode(record(detail)));
    api.addEventListener(END_EVENT, ({ detail }) => redrawNode(recordEnd(detail)));
    api.addEventListener("reconnected", () => loadHistory());
    await loadHistory();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = onNodeCreated?.apply(this, arguments);
      addChart(this);
      return out;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const out = onConfigure?.apply(this, arguments);
      this.ltxloraChart?.redraw(); // the node's id is known only after the graph is configured
      return out;
    };
  },
});
