// A JSON-RPC 2.0 client over one WebSocket, with subscriptions that are made again after every
// reconnection. The dashboard's only way to the node.

/** A JSON-RPC 2.0 client over one WebSocket to `url`. */
export class Rpc {
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
