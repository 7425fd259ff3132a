// The runs pages: every run with its status, and a page per run with its stage map (who
// trains and audits each stage and replica, under the stage cap), the loss curve from the
// committed losses, throughput, audits over time, ownership and credentials, and the
// governance proposals that name it with its halt state. The run page redraws from the
// chain as new heads arrive (see app.js).

import { el, table, fields, weft, percent, lossOf, accountLink, variant, none, section, fill, failed, show } from "./ui.js";
import { lineChart, bars } from "./chart.js";

/** Steps the throughput is measured over (the latest ones). */
const RATE_WINDOW = 32;

export async function runsPage(rpc, page) {
  page.replaceChildren(section("Runs", "runs"));
  show("runs", rpc.call("weft_runs", [null]), (runs) => runs.length === 0 ? none("no runs")
    : table(["run", "status", "accepting work", "stages × replicas", "designer", "registered"],
      runs.map((r) => [el("a", { href: `#/run/${r.id}` }, `run ${r.id}`), variant(r.status), accepting(r),
        `${r.stages} × ${r.replicas}`, accountLink(r.designer), `#${r.registeredAt}`])));
}

/** Whether a run takes work now, and why not. */
function accepting(r) {
  if (r.acceptingWork) return "yes";
  if (r.status === "halted") return "no: halted by governance";
  if (r.paused) return "no: a stage has no trainer";
  return "no";
}

/** Draws run `id`'s page; returns what redraws its sections from the chain (on new heads). */
export async function runPage(rpc, page, id) {
  page.replaceChildren(
    el("section", { id: "run" }, el("h2", {}, `Run ${id}`), el("div", { class: "body muted" }, "loading…")),
    section("Stage map", "stages"),
    section("Loss", "loss"),
    section("Audits", "audits"),
    section("Ownership and credentials", "ownership"),
    section("Governance", "governance"));
  const update = async () => {
    let run;
    try { run = await rpc.call("weft_run", [id, null]); } catch (e) { failed("run", e); return; }
    const curve = rpc.call("weft_lossCurve", [id, null, null]);
    await Promise.all([
      show("run", Promise.all([curve, throughput(rpc, curve)]), ([c, rate]) => summary(run, c, rate)),
      show("stages", rpc.call("weft_stageAssignments", [id, null]), (a) => stageMap(run, a)),
      show("loss", curve, lossChart),
      show("audits", rpc.call("weft_audits", [id, null]), auditChart),
      show("ownership", rpc.call("weft_ownership", [id, null]), ownership),
      show("governance", rpc.call("weft_proposals", [null]), (ps) => governance(run, ps)),
    ]);
  };
  await update();
  return update;
}

function summary(run, c, rate) {
  return fields([
    ["status", el("span", { id: "run-status" }, variant(run.status))],
    ["halt state", el("span", { id: "halted" }, run.status === "halted" ? "halted by governance" : "not halted")],
    ["accepting work", el("span", { id: "accepting" }, accepting(run))],
    ["model", `${run.modelConfig.nLayers} layers, d_model ${run.modelConfig.dModel}, ${run.modelConfig.nHeads} heads, vocabulary ${run.modelConfig.vocabSize}, context ${run.modelConfig.seqLen}`],
    ["stages × replicas", `${run.stages} × ${run.replicas}`],
    ["steps committed (last stage)", c.points.length === 0 ? 0 : Math.max(...c.points.map((p) => p.step)) + 1],
    ["tokens per step and replica", c.tokensPerStep],
    ["throughput", el("span", { id: "tokens-per-second" }, rate === null ? "–" : `${rate.toFixed(1)} tokens/s over the last ${RATE_WINDOW} steps`)],
    ["audit probability", percent(run.params.auditProbability)],
    ["designer", accountLink(run.designer, true)],
  ]);
}

/** Tokens per second over the latest RATE_WINDOW steps, from their blocks' timestamps. */
async function throughput(rpc, curve) {
  const c = await curve;
  const last = c.points.slice(-RATE_WINDOW * Math.max(1, new Set(c.points.map((p) => p.replica)).size));
  if (last.length < 2) return null;
  const blocks = last.map((p) => p.block);
  const [b0, b1] = [Math.min(...blocks), Math.max(...blocks)];
  if (b0 === b1) return null;
  const stamp = async (n) => (await rpc.call("chain_getHeader", [await rpc.call("chain_getBlockHash", [n])])).timestamp;
  const [t0, t1] = await Promise.all([stamp(b0), stamp(b1)]);
  // Steps committed after the first block of the window, over the time since it.
  const after = last.filter((p) => p.block > b0).length;
  return t1 > t0 ? (after * c.tokensPerStep * 1000) / (t1 - t0) : null;
}

function stageMap(run, a) {
  const cap = run.params.maxStagesPerAccount;
  const held = new Map();
  for (const s of a.stages) for (const r of s.replicas) if (r.trainer) held.set(r.trainer, (held.get(r.trainer) ?? 0) + 1);
  const rows = a.stages.map((s) => [
    `stage ${s.stage}`,
    el("div", {}, ...s.replicas.map((r) => el("div", { class: "slot" }, `replica ${r.replica}: `,
      r.trainer ? accountLink(r.trainer) : el("span", { class: "muted" }, "vacant"),
      r.trainer ? ` (${held.get(r.trainer)}/${cap} stages), next step ${r.nextStep}` : ""))),
    s.auditors.length === 0 ? none() : el("div", {}, ...s.auditors.map((x) => el("div", {}, accountLink(x)))),
  ]);
  return el("div", {},
    el("p", { id: "stage-cap" }, `Stage cap: an account may hold at most ${cap} of the ${run.stages} stages, so no participant holds the whole model.`),
    table(["stage", "trainers", "auditors"], rows),
    el("p", { class: "muted" }, a.candidates.length === 0 ? "no candidates waiting" : `${a.candidates.length} candidate(s) waiting for a slot`));
}

function lossChart(c) {
  if (c.points.length === 0) return none("no losses committed yet");
  const byReplica = new Map();
  for (const p of c.points) {
    if (p.loss === null) continue;
    if (!byReplica.has(p.replica)) byReplica.set(p.replica, []);
    const verdict = p.verdict ? `, audit ${p.verdict}` : "";
    byReplica.get(p.replica).push([p.step, lossOf(p.loss), `step ${p.step}: loss ${lossOf(p.loss).toFixed(4)} (${p.status}${verdict}), block #${p.block}`]);
  }
  const series = [...byReplica].map(([r, points]) => ({ name: `replica ${r}`, points }));
  return el("div", {}, lineChart(series, { xLabel: "step", yLabel: "loss" }),
    el("p", { class: "muted" }, `${c.points.length} committed losses of stage ${c.stage}, from step ${c.from}`));
}

function auditChart(audits) {
  if (audits.length === 0) return none("no audits yet");
  const sorted = [...audits].sort((a, b) => a.openedAt - b.openedAt);
  const passed = [], failedOnes = [], counts = { pass: 0, fail: 0, open: 0 };
  for (const a of sorted) {
    if (a.verdict === "pass") { counts.pass++; passed.push([a.openedAt, counts.pass]); }
    else if (a.verdict === "fail") { counts.fail++; failedOnes.push([a.openedAt, counts.fail]); }
    else counts.open++;
  }
  const series = [{ name: "passed", points: passed }, { name: "failed", points: failedOnes }].filter((s) => s.points.length > 0);
  return el("div", {},
    el("p", { id: "audit-counts" }, `${counts.pass} passed, ${counts.fail} failed, ${counts.open} open or inconclusive`),
    lineChart(series, { height: 180, xLabel: "block opened", yLabel: "audits" }),
    table(["step", "stage/replica", "trainer", "status", "verdict", "opened"], audits.slice(0, 20).map((a) => [
      a.step, `${a.stage}/${a.replica}`, accountLink(a.trainer), a.status, a.verdict ?? "–", `#${a.openedAt}`])));
}

function ownership(o) {
  if (o.owners.length === 0) return el("div", {}, none("no credited work yet"), el("p", {}, `credentials issued per epoch: ${o.credentialIssuance}`));
  return el("div", {},
    bars(o.owners.map((w) => ({ name: w.account.slice(0, 12) + "…", value: Number(w.share), text: percent(w.share) }))),
    table(["owner", "units", "share", "credentials"], o.owners.map((w) => [accountLink(w.account), w.units, percent(w.share), w.credentials])),
    el("p", {}, `total units ${o.totalUnits}; credentials issued per epoch ${o.credentialIssuance}; reissue pool ${o.reissuePool}`));
}

function governance(run, proposals) {
  const mine = proposals.filter((p) => Object.values(p.action)[0]?.run === run.id);
  const state = el("p", {}, run.status === "halted" ? "The run is halted: no training and no inference until governance resumes it."
    : "The run is not halted.");
  if (mine.length === 0) return el("div", {}, state, none("no proposals name this run"));
  return el("div", {}, state, table(["id", "action", "status", "ayes", "threshold", "ends"], mine.map((p) => [
    p.id, variant(p.action), variant(p.status), `${weft(p.ayes)} of ${weft(p.totalStake)}`, p.threshold === null ? "–" : percent(p.threshold), `#${p.end}`])));
}
