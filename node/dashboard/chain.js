// The chain pages: live heights and the latest blocks (from the page's head subscriptions),
// the validator set with the votes each cast in the last finalized blocks, pending and
// applied slashes, peers; and a page per block with its extrinsics and decoded events.

import { el, table, fields, weft, short, mono, accountLink, variant, none, section, fill, failed, show } from "./ui.js";

/** How many finalized blocks the votes column looks back over. */
const VOTE_WINDOW = 8;
/** The validators, slashes and peers are read again at most this often, ms. */
const REFRESH_MS = 2000;

/** The chain's live state as the subscriptions deliver it. */
export const live = { recent: [], finalized: null, refreshed: 0, proofs: new Map() };

export async function chainPage(rpc, page) {
  page.replaceChildren(
    el("section", { id: "heights" },
      el("span", { class: "big" }, "best #", el("span", { id: "best" }, "…")),
      el("span", { class: "big" }, "finalized #", el("span", { id: "finalized" }, live.finalized ?? "…"))),
    section("Latest blocks", "blocks"),
    section("Validators", "validators"),
    section("Slashes", "slashes"),
    section("Peers", "peers"));
  drawBlocks();
  const best = live.recent.length > 0 ? null
    : rpc.call("chain_getHeader", [null]).then((h) => { if (h && live.recent.length === 0) { live.recent.push(h); drawBlocks(); } });
  const finalized = rpc.call("chain_getFinalizedHead").then((hash) => rpc.call("chain_getHeader", [hash])).then((h) => {
    if (h && live.finalized === null) finalizedAt(h.number);
  });
  live.refreshed = 0;
  await Promise.all([best, finalized, refresh(rpc)]);
}

/** On every head: the list and heights; the slower sections every REFRESH_MS. */
export function onHead(rpc, h) {
  // A head of a height already listed replaces it (the first one may be the page's own fetch).
  const same = live.recent.findIndex((x) => x.number === h.number);
  if (same >= 0) live.recent.splice(same, 1);
  live.recent.push(h);
  live.recent.sort((a, b) => b.number - a.number);
  live.recent.length = Math.min(live.recent.length, 20);
  drawBlocks();
  refresh(rpc);
}

export function finalizedAt(number) {
  live.finalized = number;
  const f = document.getElementById("finalized");
  if (f) f.textContent = number;
}

/** Reads the validators, slashes and peers again (at most every REFRESH_MS). */
function refresh(rpc) {
  if (!document.getElementById("validators") || Date.now() - live.refreshed < REFRESH_MS) return null;
  live.refreshed = Date.now();
  return Promise.all([
    show("validators", validatorsWithVotes(rpc), drawValidators),
    show("slashes", Promise.all([rpc.call("weft_slashes", [null]), rpc.call("weft_appliedSlashes", [null])]), drawSlashes),
    show("peers", rpc.call("system_peers"), (p) => p.length === 0 ? none()
      : table(["peer", "finalized height"], p.map((x) => [mono(x.peerId), x.bestNumber ?? "–"]))),
  ]);
}

/** The active set, and for each of the last VOTE_WINDOW finalized blocks who signed it. */
async function validatorsWithVotes(rpc) {
  const [set, finalHash] = await Promise.all([rpc.call("weft_validators", [null]), rpc.call("chain_getFinalizedHead")]);
  const head = await rpc.call("chain_getHeader", [finalHash]);
  const numbers = [];
  for (let n = head.number; n > 0 && numbers.length < VOTE_WINDOW; n--) numbers.push(n);
  // A finalized block's proof never changes: each is read once, and only the window is kept.
  const proofs = await Promise.all(numbers.map(async (n) => {
    if (live.proofs.has(n)) return [n, live.proofs.get(n)];
    const hash = await rpc.call("chain_getBlockHash", [n]);
    const proof = hash ? await rpc.call("chain_getFinalityProof", [hash]) : null;
    if (proof) live.proofs.set(n, proof);
    return [n, proof];
  }));
  for (const n of live.proofs.keys()) if (!numbers.includes(n)) live.proofs.delete(n);
  return { set, proofs };
}

function drawValidators({ set, proofs }) {
  if (set.active.length === 0) return none("no active validators");
  const heading = proofs.map(([n]) => `#${n}`);
  return table(["account", "stake", ...heading, "signed"],
    set.active.map((v) => {
      const marks = proofs.map(([, p]) => (p === null ? "–" : p.signers.includes(v.account) ? "✓" : "✗"));
      const signed = marks.filter((m) => m === "✓").length;
      return [accountLink(v.account, true), weft(v.stake), ...marks.map((m) => el("span", { class: m === "✗" ? "error" : "" }, m)),
        el("span", { class: "votes" }, `${signed}/${proofs.length}`)];
    }));
}

function drawSlashes([pending, applied]) {
  if (pending.length + applied.length === 0) return none();
  const rows = [
    ...pending.map((x) => [x.id, accountLink(x.offender), variant(x.kind), weft(x.amount), `pending, applies at #${x.applyAt}`]),
    ...applied.map((x) => [x.id, accountLink(x.offender), variant(x.kind), weft(x.amount), `applied at #${x.appliedAt}, burnt ${weft(x.burnt)}`]),
  ];
  return table(["id", "offender", "offence", "amount", "state"], rows);
}

function drawBlocks() {
  const best = document.getElementById("best");
  if (!best) return;
  if (live.recent.length > 0) best.textContent = live.recent[0].number;
  fill("blocks", table(["#", "author", "extrinsics root", "time"],
    live.recent.map((h) => [el("a", { href: `#/block/${h.number}` }, h.number), accountLink(h.author),
      mono(short(h.extrinsicsRoot)), new Date(h.timestamp).toLocaleTimeString()])));
}

/** One block: its header, its extrinsics (SCALE hex) and its events, decoded by the node. */
export async function blockPage(rpc, page, number) {
  page.replaceChildren(
    el("section", { id: "block" }, el("h2", {}, `Block #${number}`), el("div", { class: "body muted" }, "loading…")),
    section("Extrinsics", "extrinsics"),
    section("Events", "events"));
  try {
    const hash = await rpc.call("chain_getBlockHash", [number]);
    if (!hash) { failed("block", new Error(`no block #${number} yet`)); return; }
    const [signed, events, proof] = await Promise.all([rpc.call("chain_getBlock", [hash]), rpc.call("weft_events", [hash]),
      rpc.call("chain_getFinalityProof", [hash])]);
    const h = signed.block.header;
    fill("block", fields([
      ["hash", mono(hash)],
      ["parent", number > 0 ? el("a", { class: "mono", href: `#/block/${number - 1}` }, h.parentHash) : mono(h.parentHash)],
      ["author", accountLink(h.author, true)],
      ["state root", mono(h.stateRoot)],
      ["time", new Date(h.timestamp).toLocaleString()],
      ["finality", proof ? `${proof.engine}, ${proof.signers.length} signer(s), ${(proof.signedPowerPpb / 1e7).toFixed(1)} % of the power` : "not finalized yet"],
    ]));
    const xts = signed.block.extrinsics;
    fill("extrinsics", xts.length === 0 ? none()
      : table(["index", "bytes", "SCALE"], xts.map((x, i) => [i, (x.length - 2) / 2, mono(short(x))])));
    fill("events", events.length === 0 ? none()
      : table(["phase", "event"], events.map((e) => [variant(e.phase), mono(JSON.stringify(e.event))])));
  } catch (e) { failed("block", e); }
}
