// The Weft dashboard: plain ES modules, no dependencies, served by weft-node on its RPC port.
// It talks to the node over the same JSON-RPC a CLI uses, on one WebSocket: calls for what
// a page shows, subscriptions (new and finalized heads) for what changes live. Pages are
// routed by the URL's hash: #/chain, #/block/N, #/runs, #/run/N, #/account/ADDRESS,
// #/playground.

import { Rpc } from "./rpc.js";
import { chainPage, blockPage, onHead, finalizedAt } from "./chain.js";
import { runsPage, runPage } from "./runs.js";
import { accountPage } from "./account.js";
import { playgroundPage } from "./playground.js";

const rpc = new Rpc(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`);
const conn = document.getElementById("conn");
rpc.onstate = (up) => { conn.textContent = up ? `connected to ${location.host}` : "disconnected; retrying"; };

/** Each route: its tab and how it draws, given the hash's argument. A page that follows the
 * chain returns a function that redraws it; it is called on new heads, at most every
 * REDRAW_MS and never while a redraw is still running. */
const pages = {
  chain: ["chain", (page) => chainPage(rpc, page)],
  block: ["chain", (page, arg) => blockPage(rpc, page, Number(arg))],
  runs: ["runs", (page) => runsPage(rpc, page)],
  run: ["runs", (page, arg) => runPage(rpc, page, Number(arg))],
  account: ["account", (page, arg) => accountPage(rpc, page, arg)],
  playground: ["playground", (page) => playgroundPage(rpc, page)],
};
const REDRAW_MS = 3000;
const current = { redraw: null, at: 0, busy: false, route: 0 };

async function route() {
  const [, name = "chain", arg = ""] = location.hash.split("/");
  const [tab, draw] = pages[name] || pages.chain;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === tab);
  const mine = ++current.route;
  current.redraw = null;
  const page = document.getElementById("page");
  const redraw = await draw(page, decodeURIComponent(arg));
  if (mine !== current.route) return;
  // How long after navigation the page drew with its data (read by the tests and the bench).
  page.dataset.sinceNavigationMs = String(Math.round(performance.now()));
  if (typeof redraw === "function") {
    current.redraw = redraw;
    current.at = Date.now();
  }
}

async function followHead() {
  const { redraw } = current;
  if (!redraw || current.busy || Date.now() - current.at < REDRAW_MS) return;
  current.busy = true;
  try { await redraw(); } finally { current.busy = false; current.at = Date.now(); }
}

window.addEventListener("hashchange", route);
route();

rpc.subscribe("chain_subscribeNewHeads", (h) => { onHead(rpc, h); followHead(); });
rpc.subscribe("chain_subscribeFinalizedHeads", (h) => finalizedAt(h.number));
