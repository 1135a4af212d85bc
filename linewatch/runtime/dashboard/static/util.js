// Shared page helpers: safe element building (text only), the token for same-page requests, formatting.
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token"); // the server also set a cookie; the URL is cleaned so it is not shared
if (TOKEN !== null) history.replaceState(null, "", location.pathname);

// Attributes are set as attributes and text as textContent: nothing a message carries is parsed as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function withToken(path) {
  return TOKEN === null ? path : `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}`;
}
export const imageUrl = (verdict, kind) => withToken(`image/${verdict.id}/${kind}`);
export const fmt = {
  int: (n) => (n ?? 0).toLocaleString("en-US"),
  score: (s) => (s === null || s === undefined ? "–" : s.toFixed(3)),
  pct: (r) => `${(100 * r).toFixed(1)} %`,
  ms: (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString()),
  // A pair of latencies in one unit: ms below 10 s, else seconds.
  latency: (a, b) => (a === null || a === undefined ? "–"
    : Math.max(a, b) < 10000 ? `${fmt.ms(a)} / ${fmt.ms(b)} ms` : `${(a / 1000).toFixed(1)} / ${(b / 1000).toFixed(1)} s`),
  time: (t) => new Date(t * 1000).toLocaleTimeString("en-GB"),
};
