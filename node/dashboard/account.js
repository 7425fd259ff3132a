// The account page: paste an SS58 address (`weft key inspect //Alice` prints the one of a
// SURI; the page never sees a secret) and see its balances, staking ledger and roles, its
// trainer registration, the commitments it made with their audit verdicts, and its units,
// shares and credentials per run.

import { el, table, fields, weft, percent, lossOf, accountLink, mono, none, section, fill, show } from "./ui.js";

/** Commitments listed, newest first. */
const COMMITMENTS_SHOWN = 50;

export async function accountPage(rpc, page, who) {
  const input = el("input", { id: "address", placeholder: "SS58 address, e.g. 5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY" });
  input.addEventListener("change", () => {
    const v = input.value.trim();
    if (v) location.hash = `#/account/${v}`;
  });
  page.replaceChildren(
    el("section", {}, el("h2", {}, "Account"), input,
      el("p", { class: "muted" }, "For a key's address: ", mono("weft key inspect //Alice"), ". The page holds no keys and signs nothing.")),
    section("Balances", "balances"),
    section("Staking and roles", "roles"),
    section("Units, shares and credentials", "credentials"),
    section("Commitments", "commitments"));
  if (!who) {
    for (const id of ["balances", "roles", "credentials", "commitments"]) fill(id, none("paste an address above"));
    return;
  }
  input.value = who;
  await Promise.all([show("balances", rpc.call("weft_account", [who, null]), (a) => table(["account", "free", "reserved", "nonce"],
    [[mono(a.account), el("span", { id: "free" }, weft(a.free)), weft(a.reserved), a.nonce]])),
  show("roles", Promise.all([rpc.call("weft_stakingLedger", [who, null]), rpc.call("weft_trainer", [who, null])]), roles),
  show("credentials", rpc.call("weft_credentials", [who, null, null]).then(async (c) => {
    const owners = await Promise.all(c.runs.map((r) => rpc.call("weft_ownership", [r.runId, null])));
    return c.runs.map((r, i) => [r, owners[i].owners.find((o) => o.account === who)]);
  }), (runs) => runs.length === 0 ? none("no units or credentials in any run")
    : table(["run", "units", "share", "credentials", "escrowed"], runs.map(([r, o]) => [
      el("a", { href: `#/run/${r.runId}` }, `run ${r.runId}`), r.units, o ? percent(o.share) : "–", r.credentials, r.escrowed]))),
  show("commitments", rpc.call("weft_commitmentsOf", [who, null]), (cs) => cs.length === 0 ? none("no commitments")
    : el("div", {},
      el("p", { id: "commitment-counts" }, `${cs.length} commitments: ${cs.filter((c) => c.verdict === "pass").length} audited and passed, ${cs.filter((c) => c.verdict === "fail").length} failed, ${cs.filter((c) => c.status === "credited").length} credited`),
      table(["run", "stage/replica", "step", "loss", "block", "status", "verdict"], cs.slice(0, COMMITMENTS_SHOWN).map((c) => [
        el("a", { href: `#/run/${c.runId}` }, c.runId), `${c.stage}/${c.replica}`, c.step, c.loss === null ? "–" : lossOf(c.loss).toFixed(4),
        el("a", { href: `#/block/${c.block}` }, `#${c.block}`), c.status, c.verdict ?? "–"]))))]);
}

function roles([ledger, trainer]) {
  const rows = [];
  if (ledger === null) rows.push(["staking", "never bonded"]);
  else {
    const r = [ledger.validator ? "validator" : null, ledger.trainer ? "trainer" : null].filter(Boolean);
    rows.push(["roles", el("span", { id: "roles" }, r.length ? r.join(", ") : "none (bonded only)")],
      ["active bond", weft(ledger.active)], ["total bonded", weft(ledger.total)],
      ["unlocking", ledger.unlocking.length === 0 ? "nothing" : ledger.unlocking.map((c) => `${weft(c.value)} at #${c.unlockAt}`).join("; ")],
      ["pending slashes", ledger.pendingSlashes]);
  }
  if (trainer) {
    rows.push(["trainer peer id", mono(trainer.peerId)], ["trainer addresses", trainer.addrs.join(", ") || "–"],
      ["capacity / load", `${trainer.load} of ${trainer.capacity} stages`],
      ["runs", trainer.runs.length === 0 ? "none" : el("span", {}, ...trainer.runs.map((r) => el("a", { href: `#/run/${r}` }, `run ${r} `)))]);
  }
  return fields(rows);
}
