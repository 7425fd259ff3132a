// The playground: a prompt, sampling settings, the cost in credentials before sending (the
// node's `inference_estimate`, which signs nothing), and the completion streamed from the
// user's own `weft gateway` (OpenAI-compatible, server-sent events). The gateway holds the
// key and pays; it answers this page only when started with `--allow-origin` naming the
// node's address, so no other web page can spend the user's credentials.

import { el, fields, none, section, fill, failed } from "./ui.js";

function input(id, value, attrs = {}) { return el("input", { id, value: String(value), ...attrs }); }

export function playgroundPage(rpc, page) {
  const gateway = input("gateway", localStorage.getItem("weft.gateway") || "http://127.0.0.1:8080", { class: "narrow" });
  const run = input("pg-run", localStorage.getItem("weft.run") || "0", { type: "number", min: "0", class: "tiny" });
  const prompt = el("textarea", { id: "prompt", rows: "4" }, "The meaning of life is");
  const maxTokens = input("max-tokens", 32, { type: "number", min: "1", class: "tiny" });
  const temperature = input("temperature", 0.8, { type: "number", step: "0.1", min: "0", class: "tiny" });
  const topP = input("top-p", "", { type: "number", step: "0.05", min: "0", max: "1", placeholder: "off", class: "tiny" });
  const seed = input("seed", "", { type: "number", placeholder: "random", class: "tiny" });
  const send = el("button", { id: "send" }, "Send");
  page.replaceChildren(
    el("section", { id: "playground" }, el("h2", {}, "Playground"),
      el("p", { class: "muted" }, "Signing and payment happen in your own gateway (", el("span", { class: "mono" }, `weft gateway --key //Alice --run N --allow-origin ${location.origin}`), "), never in this page."),
      el("div", { class: "form" },
        el("label", {}, "gateway ", gateway), el("label", {}, "run ", run), el("label", {}, "max tokens ", maxTokens),
        el("label", {}, "temperature ", temperature), el("label", {}, "top-p ", topP), el("label", {}, "seed ", seed)),
      prompt, send),
    section("Cost", "cost"),
    section("Completion", "completion"));
  fill("completion", none("nothing sent yet"));

  const params = () => {
    const p = { run: Number(run.value), prompt: prompt.value, maxTokens: Number(maxTokens.value), temperature: Number(temperature.value) };
    if (topP.value !== "") p.topP = Number(topP.value);
    if (seed.value !== "") p.seed = Number(seed.value);
    return p;
  };
  let asked = 0;
  const estimate = async () => {
    const mine = ++asked;
    try {
      const e = await rpc.call("inference_estimate", [params()]);
      if (mine !== asked) return;
      fill("cost", fields([
        ["credentials", el("span", { id: "credentials-cost" }, e.credentials)],
        ["tokens", `${e.promptTokens} prompt + up to ${e.totalTokens - e.promptTokens} generated`],
        ["per token", e.credentialsPerToken],
        ["serving", e.unavailable ? el("span", { class: "error" }, e.unavailable) : `the model of step ${e.step}`],
      ]));
    } catch (err) { if (mine === asked) failed("cost", err); }
  };
  for (const i of [run, prompt, maxTokens, temperature, topP, seed]) i.addEventListener("input", estimate);
  estimate();
  send.addEventListener("click", () => complete(gateway.value.replace(/\/$/, ""), params()));
  gateway.addEventListener("change", () => localStorage.setItem("weft.gateway", gateway.value));
  run.addEventListener("change", () => localStorage.setItem("weft.run", run.value));
}

/** POSTs the request to the gateway with `stream: true` and appends each chunk's text. */
async function complete(gateway, p) {
  const out = el("pre", { id: "completion-text" });
  const status = el("p", { id: "completion-status", class: "muted" }, "streaming…");
  fill("completion", el("div", {}, out, status));
  const body = { model: `weft-run-${p.run}`, prompt: p.prompt, max_tokens: p.maxTokens, temperature: p.temperature, stream: true };
  if (p.topP !== undefined) body.top_p = p.topP;
  if (p.seed !== undefined) body.seed = p.seed;
  try {
    const r = await fetch(`${gateway}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error(`${r.status}: ${e.error?.message ?? r.statusText}`);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") { status.textContent = `done: ${chunks} chunks`; status.dataset.done = "true"; continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        out.textContent += chunk.choices?.[0]?.text ?? "";
        chunks++;
      }
    }
  } catch (e) {
    status.className = "error";
    status.textContent = `${e.message} (is the gateway running with --allow-origin ${location.origin}?)`;
  }
}
