//! The web dashboard (issue 14), served by `weft-node` on its RPC port and opened in a real
//! headless Chromium (`weft_tests::browser`), as a user opens `http://127.0.0.1:9944/`.
//!
//! Over plain HTTP the page and its module come from the node itself while JSON-RPC keeps
//! answering on the same port; `--no-dashboard` turns the page off. In the browser, the chain
//! page's best height advances on screen with the chain (the page's own WebSocket
//! subscription), the finalized height is shown, a block's page lists the events the node
//! decodes for it, and the account page shows the balance the RPC reports. A screenshot of each page is saved under the test target's temporary
//! directory (`CARGO_TARGET_TMPDIR/dashboard/`).

use super::*;
use weft_tests::browser::{shown_weft, Browser};
use weft_tests::raw::{http_post, http_raw, loopback};

/// `GET path` on the node's RPC port: status and body.
async fn get(node: &Node, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let r = http_raw(loopback(1), node.rpc_port, req.as_bytes())
        .await
        .unwrap();
    (r.status, r.body)
}

/// [`Browser::until`] with the chain tests' timeout; panics with what was on screen.
async fn until<T>(
    b: &mut Browser,
    expression: &str,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    b.until(expression, what, CHAIN_TIMEOUT, accept)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_chain_and_an_accounts_balance_in_a_browser() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("on"), &["--block-time", "200ms"])
        .await
        .unwrap();

    // Plain HTTP: the page, its module and style from the node; JSON-RPC beside them.
    let (status, page) = get(&node, "/").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"src="/app.js""#), "{page}");
    let (status, app) = get(&node, "/app.js").await;
    assert_eq!(status, 200);
    assert!(app.contains("chain_subscribeNewHeads"));
    assert_eq!(get(&node, "/style.css").await.0, 200);
    let rpc = http_post(
        loopback(1),
        node.rpc_port,
        r#"{"jsonrpc":"2.0","id":1,"method":"system_name","params":[]}"#,
    )
    .await
    .unwrap();
    assert_eq!(rpc.status, 200);
    assert!(rpc.body.contains(r#""result""#), "{}", rpc.body);

    // The chain page: the best height on screen advances with the chain.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let mut b = Browser::open(&format!("{}/#/chain", node.http_url()), (1280, 900))
        .await
        .unwrap();
    let on_screen = "Number(document.getElementById('best')?.textContent)";
    let first = until(&mut b, on_screen, "a best height", |v| {
        v.as_u64().filter(|n| *n > 0)
    })
    .await;
    let advanced = until(&mut b, on_screen, "the best height advancing", |v| {
        v.as_u64().filter(|n| *n >= first + 3)
    })
    .await;
    let rpc_best = node
        .client()
        .await
        .unwrap()
        .request::<Option<weft_primitives::Header>, _>("chain_getHeader", rpc_params![])
        .await
        .unwrap()
        .unwrap()
        .number;
    assert!(
        advanced <= rpc_best,
        "{advanced} shown, {rpc_best} on chain"
    );
    let finalized = until(
        &mut b,
        "Number(document.getElementById('finalized')?.textContent)",
        "a finalized height",
        |v| v.as_u64(),
    )
    .await;
    assert!(finalized <= rpc_best);
    // The latest blocks, each height once, newest first.
    let heights = b
        .eval("[...document.querySelectorAll('#blocks tbody tr')].map((r) => Number(r.cells[0].textContent))")
        .await
        .unwrap();
    let heights: Vec<u64> = serde_json::from_value(heights).unwrap();
    assert!(heights.len() >= 2, "{heights:?}");
    assert!(heights.windows(2).all(|w| w[0] > w[1]), "{heights:?}");
    b.screenshot(&shots.join("chain.png")).await.unwrap();

    // A block's page: a transfer's block shows its extrinsic and the events the node decodes
    // for it, one row each.
    let out = node
        .cli(&[
            "--json", "transfer", "--from", "//Alice", "--to", "//Bob", "--amount", "1.5",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    let receipt: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let block = receipt["blockNumber"].as_u64().unwrap();
    let hash: weft_primitives::Hash = serde_json::from_value(receipt["blockHash"].clone()).unwrap();
    let events = node
        .client()
        .await
        .unwrap()
        .request::<Vec<serde_json::Value>, _>("weft_events", rpc_params![hash])
        .await
        .unwrap();
    b.eval(&format!("location.hash = '#/block/{block}'"))
        .await
        .unwrap();
    let shown_hash = until(
        &mut b,
        "document.querySelector('#block tbody tr td:nth-child(2)')?.textContent ?? null",
        "the block's hash",
        |v| v.as_str().map(str::to_string),
    )
    .await;
    assert_eq!(shown_hash, hash.to_string());
    let rows = b
        .eval("document.querySelectorAll('#events tbody tr').length")
        .await
        .unwrap();
    assert!(!events.is_empty());
    assert_eq!(rows.as_u64(), Some(events.len() as u64), "{events:?}");
    let extrinsics = b
        .eval("document.querySelectorAll('#extrinsics tbody tr').length")
        .await
        .unwrap();
    assert_eq!(extrinsics.as_u64(), Some(1), "the transfer");
    b.screenshot(&shots.join("block.png")).await.unwrap();

    // The account page: //Alice's free balance as the RPC reports it.
    let alice = account("//Alice");
    let rpc_free = free(
        &node
            .client()
            .await
            .unwrap()
            .request::<AccountJson, _>("weft_account", rpc_params![alice, None::<()>])
            .await
            .unwrap(),
    );
    b.eval(&format!("location.hash = '#/account/{alice}'"))
        .await
        .unwrap();
    let balance = until(
        &mut b,
        "document.getElementById('free')?.textContent ?? null",
        "the balance",
        |v| v.as_str().map(str::to_string),
    )
    .await;
    assert_eq!(balance, shown_weft(rpc_free));
    b.screenshot(&shots.join("account.png")).await.unwrap();

    // The runs page answers too (no runs on a fresh dev chain).
    b.eval("location.hash = '#/runs'").await.unwrap();
    until(
        &mut b,
        "document.querySelector('#runs .body')?.textContent ?? ''",
        "the runs page",
        |v| v.as_str().filter(|t| t.contains("no runs")).map(|_| ()),
    )
    .await;
    b.screenshot(&shots.join("runs.png")).await.unwrap();
    eprintln!("screenshots in {}", shots.display());

    // --no-dashboard: no page; JSON-RPC as before.
    let off = Node::start(
        &dir.path().join("off"),
        &["--block-time", "200ms", "--no-dashboard"],
    )
    .await
    .unwrap();
    let (status, body) = get(&off, "/").await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("app.js"));
    assert_eq!(get(&off, "/app.js").await.0, get(&off, "/nothing").await.0);
}
