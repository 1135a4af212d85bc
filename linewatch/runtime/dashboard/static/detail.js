// The verdict detail dialog: frame or heatmap with regions, and every field of the verdict as text.
import { drawVerdict, loadImage } from "./render.js";
import { el, fmt, imageUrl } from "./util.js";

const dialog = document.getElementById("detail");
const canvas = document.getElementById("detail-canvas");
const overlay = document.getElementById("detail-overlay");
let current = null; // { verdict, frame, heat }

function draw() {
  if (current) drawVerdict(canvas, current.verdict, current.frame, current.heat, overlay.checked, 720);
}

function fields(v) {
  const rows = [
    ["runtime", v.runtime_label], ["source", v.source], ["frame", String(v.frame)], ["seq", String(v.seq)],
    ["received", fmt.time(v.received)], ["verdict", v.verdict], ["score", fmt.score(v.score)],
    ["raw score / threshold", `${v.raw_score.toPrecision(4)} / ${v.threshold.toPrecision(4)}`],
    ["model", v.model || "–"], ["defect type", v.defect_type || "–"],
    ["defect similarity", v.defect_similarity === null ? "–" : v.defect_similarity.toFixed(3)],
    ["image", `${v.image.width} × ${v.image.height}`], ["path", v.path || "–"], ["schema", v.schema],
    ["latency ms", Object.entries(v.latency_ms).map(([k, ms]) => `${k} ${fmt.ms(ms)}`).join(" · ") || "–"],
    ["regions", v.regions.length ? v.regions.map((r) =>
      `${r.width}×${r.height} at (${r.x}, ${r.y}), area ${r.area}, peak ${r.peak.toFixed(2)}`).join("\n") : "none"],
  ];
  return rows.flatMap(([k, value]) => [el("dt", { text: k }), el("dd", { text: value })]);
}

export async function openDetail(verdict) {
  current = { verdict, frame: null, heat: null };
  document.getElementById("detail-title").textContent = `${verdict.runtime_label} / ${verdict.source} · frame ${verdict.frame}`;
  document.getElementById("detail-fields").replaceChildren(...fields(verdict));
  delete canvas.dataset.rendered;
  if (!dialog.open) dialog.showModal();
  const load = (kind, wanted) => (wanted ? loadImage(imageUrl(verdict, kind)).catch(() => null) : null);
  const [heat, frame] = await Promise.all([load("heatmap", verdict.has_heatmap), load("frame", verdict.has_frame)]);
  if (current.verdict !== verdict) return; // another entry was opened meanwhile
  Object.assign(current, { heat, frame });
  draw();
  canvas.dataset.rendered = [heat ? "heatmap" : "", frame ? "frame" : ""].filter(Boolean).join("+") || "none";
  canvas.dataset.verdictId = String(verdict.id);
}

overlay.addEventListener("change", draw);
document.getElementById("detail-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
