// Building blocks of the dashboard's pages: elements, tables, sections that fill in when
// their data arrives, and how the chain's numbers are shown (balances, shares, losses).

/** `<tag attrs>children</tag>`, children as nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

/** A table of `rows` (arrays of cells, nodes or text) under `headings`. */
export function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

/** A two-column table of `[field, value]` pairs. */
export function fields(pairs) { return table(["field", "value"], pairs); }

export const UNIT = 10n ** 12n;

/** Plancks (a decimal string) as WEFT with 4 decimals; 1 WEFT = 10^12 plancks. */
export function weft(plancks) {
  const p = BigInt(plancks);
  const frac = ((p % UNIT) * 10000n) / UNIT;
  return `${p / UNIT}.${frac.toString().padStart(4, "0")} WEFT`;
}

/** Parts per billion (a number or decimal string) as a percentage with 2 decimals. */
export function percent(ppb) { return `${(Number(ppb) / 1e7).toFixed(2)} %`; }

/** A committed loss (× 10^6) as a number. */
export function lossOf(micro) { return micro / 1e6; }

export function short(s) { return s.length > 16 ? `${s.slice(0, 8)}…${s.slice(-6)}` : s; }

export function mono(text) { return el("span", { class: "mono" }, text); }

/** An account, linked to its page. */
export function accountLink(who, full = false) {
  return el("a", { class: "mono", href: `#/account/${who}` }, full ? who : short(who));
}

/** An enum in the pallets' serde form (`"training"`, `{"haltRun":{"run":0}}`) as text. */
export function variant(v) {
  if (typeof v === "string") return v;
  const [name, body] = Object.entries(v)[0];
  return `${name} ${JSON.stringify(body)}`;
}

export function none(text = "none") { return el("span", { class: "muted" }, text); }

/** A section titled `title` whose body says "loading…" until `fill`ed. */
export function section(title, id) {
  return el("section", { id }, el("h2", {}, title), el("div", { class: "body muted" }, "loading…"));
}

export function fill(id, content) {
  const body = document.querySelector(`#${id} .body`);
  if (!body) return;
  body.className = "body";
  body.replaceChildren(content);
}

export function failed(id, e) {
  const body = document.querySelector(`#${id} .body`);
  if (body) { body.className = "body error"; body.textContent = e.message; }
}

/** Fills section `id` with `draw(await answer)`, or its error. */
export async function show(id, answer, draw) {
  try { fill(id, draw(await answer)); } catch (e) { failed(id, e); }
}
