// The Weft dashboard: plain ES module, no dependencies, served by weft-node on its RPC port.
// It talks to the node over the same JSON-RPC a CLI uses, on one WebSocket: calls for what
// a page shows, subscriptions (new and finalized heads) for what changes live.

/** A JSON-RPC 2.0 client over one WebSocket to the page's own origin. */
class Rpc {
  constructor(url) {
    this.url = url;
    this.next = 1;
    this.pending = new Map();
    this.subs = new Map();
    this.onstate = () => {};
    this.open();
  }

  open() {
    this.ready = new Promise((resolve) => {
      const ws = new WebSocket(this.url);
      ws.onopen = () => { this.onstate(true); resolve(ws); };
      ws.onmessage = (e) => this.receive(JSON.parse(e.data));
      ws.onclose = () => {
        this.onstate(false);
        for (const [, p] of this.pending) p.reject(new Error("connection closed"));
        this.pending.clear();
        this.subs.clear();
        setTimeout(() => { this.open(); this.resubscribe(); }, 1000);
      };
      this.ws = ws;
    });
    this.wanted = this.wanted || [];
  }

  receive(msg) {
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message)); else p.resolve(msg.result);
    } else if (msg.params && this.subs.has(msg.params.subscription)) {
      this.subs.get(msg.params.subscription)(msg.params.result);
    }
  }

  async call(method, params = []) {
    const ws = await this.ready;
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  /** Subscribes `method` with `handler`, again after every reconnection. */
  async subscribe(method, handler) {
    this.wanted.push([method, handler]);
    const id = await this.call(method);
    this.subs.set(id, handler);
  }

  async resubscribe() {
    for (const [method, handler] of this.wanted) {
      try { this.subs.set(await this.call(method), handler); } catch (_) { /* retried on the next reconnection */ }
    }
  }
}

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
const rpc = new Rpc(wsUrl);
const conn = document.getElementById("conn");
rpc.onstate = (up) => { conn.textContent = up ? `connected to ${location.host}` : "disconnected; retrying"; };

/** `<tag attrs>children</tag>`, children as nodes or text. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

/** Plancks (a decimal string) as WEFT with 4 decimals; 1 WEFT = 10^12 plancks. */
function weft(plancks) {
  const p = BigInt(plancks);
  const unit = 10n ** 12n;
  const frac = ((p % unit) * 10000n) / unit;
  return `${p / unit}.${frac.toString().padStart(4, "0")} WEFT`;
}

function short(s) { return s.length > 16 ? `${s.slice(0, 8)}…${s.slice(-6)}` : s; }

function section(title, id) {
  return el("section", { id }, el("h2", {}, title), el("div", { class: "body muted" }, "loading…"));
}

function fill(id, content) {
  const body = document.querySelector(`#${id} .body`);
  if (!body) return;
  body.className = "body";
  body.replaceChildren(content);
}

function failed(id, e) {
  const body = document.querySelector(`#${id} .body`);
  if (body) { body.className = "body error"; body.textContent = e.message; }
}

// --- pages ------------------------------------------------------------------------------

const recent = []; // the last block headers seen, newest first

async function chainPage(page) {
  page.replaceChildren(
    el("section", { id: "heights" },
      el("span", { class: "big" }, "best #", el("span", { id: "best" }, "…")),
      el("span", { class: "big" }, "finalized #", el("span", { id: "finalized" }, "…"))),
    section("Latest blocks", "blocks"),
    section("Validators", "validators"),
    section("Slashes", "slashes"),
    section("Peers", "peers"));
  drawBlocks();
  if (recent.length === 0) {
    rpc.call("chain_getHeader", [null]).then((h) => { if (h && recent.length === 0) { recent.push(h); drawBlocks(); } });
  }
  rpc.call("chain_getFinalizedHead").then((hash) => rpc.call("chain_getHeader", [hash])).then((h) => {
    const f = document.getElementById("finalized");
    if (f && h && f.textContent === "…") f.textContent = h.number;
  });
  rpc.call("weft_validators", [null]).then((v) => fill("validators", table(
    ["account", "stake"], v.active.map((a) => [el("span", { class: "mono" }, a.account), weft(a.stake)]))),
  (e) => failed("validators", e));
  rpc.call("weft_slashes", [null]).then((s) => fill("slashes", s.length === 0 ? el("span", { class: "muted" }, "none")
    : table(["id", "offender", "amount", "kind", "applies at"],
      s.map((x) => [x.id, el("span", { class: "mono" }, short(x.offender)), weft(x.amount), JSON.stringify(x.kind), `#${x.applyAt}`]))),
  (e) => failed("slashes", e));
  rpc.call("system_peers").then((p) => fill("peers", p.length === 0 ? el("span", { class: "muted" }, "none")
    : table(["peer"], p.map((x) => [el("span", { class: "mono" }, JSON.stringify(x))]))),
  (e) => failed("peers", e));
}

function drawBlocks() {
  const best = document.getElementById("best");
  if (!best) return;
  if (recent.length > 0) best.textContent = recent[0].number;
  fill("blocks", table(["#", "author", "extrinsics root", "time"],
    recent.map((h) => [el("a", { href: `#/block/${h.number}` }, h.number), el("span", { class: "mono" }, short(h.author)),
      el("span", { class: "mono" }, short(h.extrinsicsRoot)), new Date(h.timestamp).toLocaleTimeString()])));
}

/** One block: its header, its extrinsics (SCALE hex) and its events, decoded by the node. */
async function blockPage(page) {
  const number = Number(location.hash.split("/")[2]);
  page.replaceChildren(
    el("section", { id: "block" }, el("h2", {}, `Block #${number}`), el("div", { class: "body muted" }, "loading…")),
    section("Extrinsics", "extrinsics"),
    section("Events", "events"));
  try {
    const hash = await rpc.call("chain_getBlockHash", [number]);
    if (!hash) { failed("block", new Error(`no block #${number} yet`)); return; }
    const [signed, events] = await Promise.all([rpc.call("chain_getBlock", [hash]), rpc.call("weft_events", [hash])]);
    const h = signed.block.header;
    fill("block", table(["field", "value"], [
      ["hash", el("span", { class: "mono" }, hash)],
      ["parent", el("span", { class: "mono" }, h.parentHash)],
      ["author", el("span", { class: "mono" }, h.author)],
      ["state root", el("span", { class: "mono" }, h.stateRoot)],
      ["time", new Date(h.timestamp).toLocaleString()],
      ["finality proof", signed.justification ? "yes" : "no"],
    ]));
    const xts = signed.block.extrinsics;
    fill("extrinsics", xts.length === 0 ? el("span", { class: "muted" }, "none")
      : table(["index", "bytes", "SCALE"], xts.map((x, i) => [i, (x.length - 2) / 2, el("span", { class: "mono" }, short(x))])));
    fill("events", events.length === 0 ? el("span", { class: "muted" }, "none")
      : table(["phase", "event"], events.map((e) => [JSON.stringify(e.phase), el("span", { class: "mono" }, JSON.stringify(e.event))])));
  } catch (e) { failed("block", e); }
}

async function runsPage(page) {
  page.replaceChildren(section("Runs", "runs"));
  try {
    const runs = await rpc.call("weft_runs", [null]);
    fill("runs", runs.length === 0 ? el("span", { class: "muted" }, "no runs")
      : table(["run", "status", "accepting work", "designer"],
        runs.map((r) => [r.id, JSON.stringify(r.status), r.acceptingWork ? "yes" : "no", el("span", { class: "mono" }, short(r.designer))])));
  } catch (e) { failed("runs", e); }
}

async function accountPage(page) {
  const input = el("input", { id: "address", placeholder: "SS58 address, e.g. 5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY" });
  const show = async () => {
    const who = input.value.trim();
    if (!who) return;
    location.hash = `#/account/${who}`;
  };
  input.addEventListener("change", show);
  page.replaceChildren(el("section", {}, el("h2", {}, "Account"), input), section("Balances", "balances"));
  const who = decodeURIComponent(location.hash.split("/")[2] || "");
  if (!who) { fill("balances", el("span", { class: "muted" }, "paste an address above")); return; }
  input.value = who;
  try {
    const a = await rpc.call("weft_account", [who, null]);
    fill("balances", table(["account", "free", "reserved", "nonce"],
      [[el("span", { class: "mono" }, a.account), el("span", { id: "free" }, weft(a.free)), weft(a.reserved), a.nonce]]));
  } catch (e) { failed("balances", e); }
}

const pages = { chain: chainPage, block: blockPage, runs: runsPage, account: accountPage };

function route() {
  const name = (location.hash.split("/")[1] || "chain");
  const draw = pages[name] || chainPage;
  const tab = name === "block" ? "chain" : name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === tab);
  draw(document.getElementById("page"));
}

window.addEventListener("hashchange", route);
route();

// Live: the heights on every page that shows them.
rpc.subscribe("chain_subscribeNewHeads", (h) => {
  // A head of a height already listed replaces it (the first one may be the page's own fetch).
  const same = recent.findIndex((x) => x.number === h.number);
  if (same >= 0) recent.splice(same, 1);
  recent.push(h);
  recent.sort((a, b) => b.number - a.number);
  recent.length = Math.min(recent.length, 20);
  drawBlocks();
});
rpc.subscribe("chain_subscribeFinalizedHeads", (h) => {
  const f = document.getElementById("finalized");
  if (f) f.textContent = h.number;
});
