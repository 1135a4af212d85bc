// Canvas drawing: verdict images (frame, colour-mapped heatmap, region boxes) and the score timeline.
// Nothing here touches HTML markup; text only ever goes through fillText.

const STOPS = [ // heatmap colour map: dark blue -> cyan -> green -> yellow -> red
  [0.0, [20, 24, 82]], [0.25, [24, 130, 220]], [0.45, [40, 200, 170]],
  [0.5, [120, 220, 80]], [0.7, [250, 210, 40]], [1.0, [230, 40, 30]],
];

function buildLut() {
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const v = i / 255;
    let k = 1;
    while (k < STOPS.length - 1 && STOPS[k][0] < v) k++;
    const [v0, c0] = STOPS[k - 1];
    const [v1, c1] = STOPS[k];
    const f = Math.min(1, Math.max(0, (v - v0) / (v1 - v0)));
    for (let c = 0; c < 3; c++) lut[i * 4 + c] = c0[c] + f * (c1[c] - c0[c]);
    // On a frame, good areas stay clear and the map fades in just below the threshold (128 = 0.5).
    lut[i * 4 + 3] = 255 * 0.75 * Math.min(1, Math.max(0, (v - 0.35) / 0.25));
  }
  return lut;
}
const LUT = buildLut();

const colourCache = new WeakMap();

// The grayscale heatmap PNG (pixel = normalised score x 255) as an RGBA canvas; alpha=false for heatmap-only views.
function colourise(img, alpha) {
  const key = alpha ? "a" : "o";
  const cached = colourCache.get(img);
  if (cached && cached[key]) return cached[key];
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const px = data.data;
  for (let i = 0; i < px.length; i += 4) {
    const v = px[i];
    px[i] = LUT[v * 4]; px[i + 1] = LUT[v * 4 + 1]; px[i + 2] = LUT[v * 4 + 2];
    px[i + 3] = alpha ? LUT[v * 4 + 3] : 255;
  }
  ctx.putImageData(data, 0, 0);
  colourCache.set(img, { ...(cached || {}), [key]: canvas });
  return canvas;
}

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`image ${url} not available`));
    img.src = url;
  });
}

// Draw one verdict: the frame when sent (heatmap over it when `overlay`), else the heatmap alone; boxes on top.
export function drawVerdict(canvas, verdict, frame, heat, overlay, maxWidth = 640) {
  const w = verdict.image.width || (heat ? heat.naturalWidth : 256);
  const h = verdict.image.height || (heat ? heat.naturalHeight : 256);
  const scale = Math.min(1, maxWidth / w);
  canvas.width = Math.max(1, Math.round(w * scale));
  canvas.height = Math.max(1, Math.round(h * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.fillStyle = "#0b0f14";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (frame) ctx.drawImage(frame, 0, 0, canvas.width, canvas.height);
  if (heat && (overlay || !frame)) ctx.drawImage(colourise(heat, Boolean(frame)), 0, 0, canvas.width, canvas.height);
  const sx = canvas.width / w;
  const sy = canvas.height / h;
  ctx.lineWidth = Math.max(1.5, canvas.width / 300);
  ctx.strokeStyle = "#ffffff";
  ctx.shadowColor = "rgba(0,0,0,0.8)";
  ctx.shadowBlur = 3;
  for (const r of verdict.regions) ctx.strokeRect(r.x * sx, r.y * sy, r.width * sx, r.height * sy);
  ctx.shadowBlur = 0;
}

export const PALETTE = ["#4cc9f0", "#f4a261", "#90be6d", "#c77dff", "#ffd166", "#48cae4", "#ff8fab", "#a3b18a"];

// series: [{label, colour, points: [[t, score, defect], ...]}]; x axis = seconds before `now`.
export function drawTimeline(canvas, series, now) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 600;
  const cssH = canvas.clientHeight || 220;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const pad = { l: 40, r: 12, t: 10, b: 24 };
  const pw = cssW - pad.l - pad.r;
  const ph = cssH - pad.t - pad.b;
  let oldest = now - 10;
  for (const s of series) if (s.points.length) oldest = Math.min(oldest, s.points[0][0]);
  const span = Math.max(10, now - oldest);
  const x = (t) => pad.l + pw * (1 - (now - t) / span);
  const y = (v) => pad.t + ph * (1 - Math.min(1, Math.max(0, v)));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8b98a9";
  ctx.strokeStyle = "#243041";
  ctx.lineWidth = 1;
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.beginPath(); ctx.moveTo(pad.l, y(v)); ctx.lineTo(pad.l + pw, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(2), 6, y(v) + 4);
  }
  const step = niceStep(span);
  for (let s = 0; s <= span; s += step) {
    ctx.fillText(s === 0 ? "now" : `-${formatSpan(s)}`, x(now - s) - 12, cssH - 6);
  }
  ctx.save();
  ctx.strokeStyle = "#ef476f";
  ctx.setLineDash([6, 4]);
  ctx.beginPath(); ctx.moveTo(pad.l, y(0.5)); ctx.lineTo(pad.l + pw, y(0.5)); ctx.stroke();
  ctx.restore();
  ctx.fillStyle = "#ef476f";
  ctx.fillText("threshold", pad.l + pw - 56, y(0.5) - 5);
  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
    ctx.fillStyle = "#ef476f";
    for (const [t, v, defect] of s.points) {
      if (defect) { ctx.beginPath(); ctx.arc(x(t), y(v), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    }
  }
}

function niceStep(span) {
  for (const s of [2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200]) if (span / s <= 6) return s;
  return 21600;
}

export function formatSpan(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
