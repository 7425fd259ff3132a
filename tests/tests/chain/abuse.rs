//! The node under abuse (issue 10), end to end against the real `weft-node` on loopback.
//!
//! * `unfunded_flood_leaves_the_pool_empty_and_eviction_lets_honest_transfers_in`: 300
//!   never-funded keys each sign 8 immortal future-nonce transfers (2,400) and send them in
//!   HTTP batches of 200 to a node with `--pool-limit 1000`; every one is refused with 1010
//!   and the pool stays empty. Then 16 funded keys fill the pool with zero-tip future
//!   transactions (64 each, the per-sender quota, 1,024 for 1,000 places); //Alice's
//!   transfer with a tip evicts the cheapest and lands within a few blocks.
//! * `idle_websockets_do_not_lock_out_others`: with `--rpc-max-connections 16
//!   --rpc-max-connections-per-ip 4 --rpc-idle-timeout 2s`, an attacker at 127.0.0.2 completes
//!   4 WebSocket handshakes and goes silent; its fifth connection gets 429 while a client at
//!   127.0.0.3 is served. Attackers at four addresses then take all 16 places: a newcomer
//!   gets 429 until the idle timeout closes them, within a bound, after which it is served.
//!   A jsonrpsee client that sends nothing but answers pings stays connected throughout.
//! * `a_damaged_write_ahead_log_stops_the_node_instead_of_rolling_back`: SIGKILL at a
//!   finalized block ≥ #6, cut the newest rocksdb `*.log` 2,000 bytes short (moved off a record
//!   boundary, so the damage is visible in the log's framing), restart: the node refuses to
//!   start, says the database is damaged and how to recover (`purge-chain`), and after
//!   `purge-chain -y` it starts again from genesis.
//! * `a_log_cut_at_a_record_boundary_is_caught_by_the_watermark_and_db_recover_goes_on`: the
//!   same, but the log loses exactly its last whole write (rocksdb sees a clean, shorter log):
//!   the finalized watermark outside the database catches it, the node refuses to start and
//!   names `--db-recover`, which opens at the older block; the chain goes on, and a plain
//!   restart afterwards opens normally.
//! * `malformed_requests_get_errors`: a call whose id is an object or `1e400` gets -32600
//!   (it got the body `null`), a chunked body past 2 MiB gets 413 (it got 500), a WebSocket
//!   message in continuation frames past 2 MiB closes the connection (it hung, unanswered),
//!   and garbage sent to the Prometheus port gets 400 (it got 200).
//!
//! Linux routes all of 127.0.0.0/8 to the loopback device, so a test can speak from several
//! source addresses without leaving the machine.

use super::*;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::{Era, Hash};
use weft_runtime::{balances, Extrinsic};
use weft_tests::raw::{
    closed_within, connect_from, http_post, http_raw, loopback, parse_reply, submit_batches,
    ws_handshake, HttpReply, HTTP_TIMEOUT,
};

fn transfer(k: &Keypair, dest: AccountId, nonce: u64, tip: Balance, genesis: Hash) -> Extrinsic {
    let call = RuntimeCall::Balances(balances::Call::Transfer { dest, value: 1 });
    let ctx = SigningContext {
        genesis_hash: genesis,
        birth_hash: genesis,
    };
    Extrinsic::new_signed(call, k, nonce, tip, Era::Immortal, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfunded_flood_leaves_the_pool_empty_and_eviction_lets_honest_transfers_in() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--pool-limit", "1000"])
        .await
        .unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 1).await;
    let genesis = rpc.block_hash(Some(0)).await.unwrap().unwrap();
    let alice = Keypair::from_suri("//Alice").unwrap();
    let bob = account("//Bob");

    // --- 300 never-funded keys × 8 future nonces, in HTTP batches of 200 ------------------
    let started = Instant::now();
    let junk: Vec<Extrinsic> = (0..300)
        .flat_map(|i| {
            let k = Keypair::from_suri(&format!("//flood/{i}")).unwrap();
            (1..=8).map(move |n| transfer(&k, bob, n, 0, genesis))
        })
        .collect();
    let codes = submit_batches(loopback(1), node.rpc_port, &junk, 200)
        .await
        .unwrap();
    let flood_time = started.elapsed();
    let admitted = codes.iter().filter(|c| **c == 0).count();
    assert_eq!(
        admitted,
        0,
        "unfunded future transactions were admitted\nnode log:\n{}",
        node.log_tail()
    );
    assert!(codes.iter().all(|c| *c == i64::from(INVALID_TRANSACTION)));
    assert!(rpc.pending_extrinsics().await.unwrap().is_empty());
    eprintln!(
        "flood: {} unfunded transactions refused in {flood_time:?}",
        junk.len()
    );

    // --- 16 funded keys fill the pool with zero-tip future transactions --------------------
    let nonce0 = rpc.account(alice.account_id(), None).await.unwrap().nonce;
    let fillers: Vec<Keypair> = (0..16)
        .map(|i| Keypair::from_suri(&format!("//filler/{i}")).unwrap())
        .collect();
    for (i, k) in fillers.iter().enumerate() {
        let call = RuntimeCall::Balances(balances::Call::Transfer {
            dest: k.account_id(),
            value: UNIT,
        });
        let ctx = SigningContext {
            genesis_hash: genesis,
            birth_hash: genesis,
        };
        let xt = Extrinsic::new_signed(call, &alice, nonce0 + i as u64, 0, Era::Immortal, ctx);
        rpc.submit_extrinsic(Bytes(xt.encode())).await.unwrap();
    }
    wait_until(CHAIN_TIMEOUT, "the fillers to be funded", || async {
        rpc.account(alice.account_id(), None)
            .await
            .is_ok_and(|a| a.nonce == nonce0 + 16)
    })
    .await
    .unwrap();
    let fill: Vec<Extrinsic> = fillers
        .iter()
        .flat_map(|k| (1..=64).map(move |n| transfer(k, bob, n, 0, genesis)))
        .collect();
    let codes = submit_batches(loopback(1), node.rpc_port, &fill, 256)
        .await
        .unwrap();
    let admitted = codes.iter().filter(|c| **c == 0).count();
    assert_eq!(admitted, 1000, "the pool takes exactly its limit");
    assert!(codes
        .iter()
        .filter(|c| **c != 0)
        .all(|c| *c == i64::from(weft_rpc_api::POOL_FULL)));
    assert_eq!(rpc.pending_extrinsics().await.unwrap().len(), 1000);

    // --- //Alice's tipped transfer evicts the cheapest and lands in the next blocks --------
    let at = best_number(&rpc).await.unwrap();
    let honest = transfer(&alice, bob, nonce0 + 16, UNIT / 1000, genesis);
    rpc.submit_extrinsic(Bytes(honest.encode()))
        .await
        .expect("an honest tipped transfer into a full pool");
    let landed = wait_for(CHAIN_TIMEOUT, "Alice's transfer to land", || async {
        let a = rpc.account(alice.account_id(), None).await.ok()?;
        if a.nonce == nonce0 + 17 {
            best_number(&rpc).await
        } else {
            None
        }
    })
    .await
    .unwrap();
    assert!(
        landed <= at + 5,
        "included at #{landed}, submitted at #{at}"
    );
    // Still at most the limit, and the filler junk was not included (it is all future).
    assert!(rpc.pending_extrinsics().await.unwrap().len() <= 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_do_not_lock_out_others() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &[
            "--rpc-max-connections",
            "16",
            "--rpc-max-connections-per-ip",
            "4",
            "--rpc-idle-timeout",
            "2s",
        ],
    )
    .await
    .unwrap();
    let port = node.rpc_port;
    let health = r#"{"jsonrpc":"2.0","id":1,"method":"system_health","params":[]}"#;
    // A real client that sends nothing but answers the server's pings (jsonrpsee does).
    let quiet = node.client().await.unwrap();
    let quiet_since = Instant::now();

    // --- one attacker address: its 4 places, then 429; others are still served ----------
    let mut idle = Vec::new();
    for _ in 0..4 {
        let s = ws_handshake(loopback(2), port).await.unwrap();
        idle.push(s.expect("a handshake within the per-IP limit"));
    }
    let opened = Instant::now();
    assert!(
        ws_handshake(loopback(2), port).await.unwrap().is_none(),
        "the fifth connection from one address is refused"
    );
    assert_eq!(
        http_post(loopback(2), port, health).await.unwrap().status,
        429
    );
    let other = http_post(loopback(3), port, health).await.unwrap();
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(other.body.contains("\"result\""), "{}", other.body);
    assert!(ws_handshake(loopback(3), port).await.unwrap().is_some());

    // The silent ones are closed after the idle timeout (2 s), not before half of it.
    for s in idle {
        let after = closed_within(s, Duration::from_secs(15))
            .await
            .expect("an idle WebSocket is closed within 15 s");
        assert!(
            opened.elapsed() >= Duration::from_secs(1),
            "closed too early ({after:?})"
        );
    }
    // Its places are free again.
    let again = ws_handshake(loopback(2), port).await.unwrap();
    assert!(again.is_some());
    drop(again);

    // --- attackers at five addresses fill the server: a newcomer waits for the timeout -----
    // 20 attempts for 16 places: the global cap is reached whatever else is still open.
    let mut all = Vec::new();
    let mut refused = 0;
    for last in 4..9 {
        for _ in 0..4 {
            match ws_handshake(loopback(last), port).await.unwrap() {
                Some(s) => all.push(s),
                None => refused += 1,
            }
        }
    }
    assert!(
        all.len() <= 16 && refused >= 4,
        "{} open, {refused} refused",
        all.len()
    );
    let full_at = Instant::now();
    assert_eq!(
        http_post(loopback(10), port, health).await.unwrap().status,
        429,
        "the server is full"
    );
    wait_until(
        Duration::from_secs(15),
        "a newcomer to be served",
        || async {
            http_post(loopback(10), port, health)
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await
    .unwrap();
    let waited = full_at.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "served after {waited:?}: the silent connections were not holding the places"
    );
    eprintln!("newcomer served {waited:?} after the server was full (idle timeout 2 s)");
    drop(all);
    // The quiet but live client outlived several idle timeouts.
    assert!(quiet_since.elapsed() > Duration::from_secs(4));
    quiet
        .system_health()
        .await
        .expect("a client that answers pings stays connected");
    // And the node still works for a normal client.
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 2).await;
}

/// The physical records of a rocksdb write-ahead log (32 KiB blocks, 7-byte record headers
/// `crc:4 len:2 type:1`, zero padding at block ends): `(start, end, type)`, type 1 a whole
/// write, 2/3/4 the first/middle/last fragment of one.
fn wal_records(log: &[u8]) -> Vec<(usize, usize, u8)> {
    const BLOCK: usize = 32 * 1024;
    let mut records = Vec::new();
    let mut at = 0;
    while at + 7 <= log.len() {
        let left_in_block = BLOCK - at % BLOCK;
        if left_in_block < 7 {
            at += left_in_block;
            continue;
        }
        let len = u16::from_le_bytes([log[at + 4], log[at + 5]]) as usize;
        if len == 0 && log[at + 6] == 0 {
            break;
        }
        records.push((at, at + 7 + len, log[at + 6]));
        at += 7 + len;
    }
    records
}

/// Starts a dev node in `dir`, waits for finalized #6, SIGKILLs it, and returns the node
/// (stopped), the finalized number it reported last, and its newest `*.log`.
async fn killed_at_finalized_six(dir: &Path) -> (Node, BlockNumber, PathBuf) {
    let mut node = Node::start(dir, &[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    let last = wait_for(CHAIN_TIMEOUT, "finalized #6", || async {
        let h = rpc.finalized_head().await.ok()?;
        let header = rpc.header(Some(h)).await.ok().flatten()?;
        (header.number >= 6).then_some(header.number)
    })
    .await
    .unwrap();
    drop(rpc);
    node.kill9().unwrap();
    let db = std::fs::read_dir(dir.join("chains"))
        .unwrap()
        .map(|e| e.unwrap().path().join("db"))
        .find(|p| p.is_dir())
        .expect("the chain database directory");
    let newest_log = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("a write-ahead log");
    (node, last, newest_log)
}

fn truncate(file: &Path, len: usize) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len as u64)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_write_ahead_log_stops_the_node_instead_of_rolling_back() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut node, _, newest_log) = killed_at_finalized_six(dir.path()).await;
    let log = std::fs::read(&newest_log).unwrap();
    assert!(log.len() > 2_000, "{} bytes of log", log.len());
    let ends: Vec<usize> = wal_records(&log).iter().map(|r| r.1).collect();
    let mut cut = log.len() - 2_000;
    while ends.contains(&cut) {
        cut -= 1;
    }
    truncate(&newest_log, cut);

    let err = node
        .restart(&[])
        .await
        .expect_err("the node must not start on a damaged log");
    let msg = format!("{err:#}");
    assert!(msg.contains("damaged"), "{msg}");
    assert!(msg.contains("purge-chain"), "{msg}");
    assert!(msg.contains("--db-recover"), "{msg}");

    // The way forward works: purge, then start from genesis.
    let _ = node.kill9(); // reaps the exited process
    weft_tests::purge_chain("dev", dir.path()).unwrap();
    node.restart(&[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_at_a_record_boundary_is_caught_by_the_watermark_and_db_recover_goes_on() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut node, finalized, newest_log) = killed_at_finalized_six(dir.path()).await;
    // Drop the last whole write (the newest block) by cutting the log where that write's
    // first record starts: the framing of what remains is intact.
    let log = std::fs::read(&newest_log).unwrap();
    let records = wal_records(&log);
    let (start, _, _) = *records
        .iter()
        .rev()
        .find(|r| r.2 == 1 || r.2 == 2)
        .expect("a write in the log");
    truncate(&newest_log, start);

    let err = node
        .restart(&[])
        .await
        .expect_err("a database that lost its newest block must not open");
    let msg = format!("{err:#}");
    assert!(msg.contains("lost acknowledged writes"), "{msg}");
    assert!(msg.contains(&format!("finalized #{finalized}")), "{msg}");
    assert!(msg.contains("--db-recover"), "{msg}");

    // --db-recover accepts the loss, opens at the older block and the dev chain goes on.
    let _ = node.kill9();
    node.restart(&["--db-recover"]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, finalized + 2).await;
    // A plain restart after that opens normally (the watermark was moved down, then up).
    drop(rpc);
    node.kill9().unwrap();
    node.restart(&[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, finalized + 3).await;
}

/// Sends a chunked POST of `total` bytes while reading the reply (the server may answer and
/// close before the body is all sent).
async fn chunked_post(port: u16, total: usize) -> HttpReply {
    let s = connect_from(loopback(1), port).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
            sent += chunk.len();
        }
        wr.write_all(b"0\r\n\r\n").await
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if parse_reply(&raw).status != 0 && raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let reply = parse_reply(&raw);
                if !reply.body.is_empty() {
                    break;
                }
            }
        }
    })
    .await;
    writer.abort();
    parse_reply(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await.unwrap();
    let port = node.rpc_port;
    for id in [r#"{"a":1}"#, "1e400", "[1]"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"system_health","params":[]}}"#);
        let reply = http_post(loopback(1), port, &body).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("id {id}: {e}: {:?}", reply.body));
        assert_eq!(v["error"]["code"], -32600, "id {id}: {}", reply.body);
        assert!(v["id"].is_null(), "id {id}: {}", reply.body);
    }
    // In a batch, the good call is answered and the bad one gets -32600.
    let batch = r#"[{"jsonrpc":"2.0","id":7,"method":"system_health","params":[]},{"jsonrpc":"2.0","id":{},"method":"system_health","params":[]}]"#;
    let reply = http_post(loopback(1), port, batch).await.unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v.len(), 2, "{}", reply.body);
    assert!(v.iter().any(|a| a["id"] == 7 && a.get("result").is_some()));
    assert!(v.iter().any(|a| a["error"]["code"] == -32600));
    // A normal call still works.
    let ok = http_post(
        loopback(1),
        port,
        r#"{"jsonrpc":"2.0","id":1,"method":"system_health","params":[]}"#,
    )
    .await
    .unwrap();
    assert!(ok.body.contains("\"result\""), "{}", ok.body);

    // A chunked body past the 2 MiB limit: 413, not 500.
    let reply = chunked_post(port, 3 * 1024 * 1024).await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    // A WebSocket message in 16 KiB continuation frames past 2 MiB: the connection is closed
    // at once (it was left hanging with no answer and no close).
    let mut ws = ws_handshake(loopback(1), port).await.unwrap().unwrap();
    let masked = |opcode: u8, fin: bool, payload: &[u8]| {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode, 0x80 | 126];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as it is
        f.extend_from_slice(payload);
        f
    };
    let piece = vec![b' '; 16 * 1024];
    let started = Instant::now();
    let mut frames = masked(
        1,
        false,
        br#"{"jsonrpc":"2.0","id":1,"method":"system_health","x":""#,
    );
    for _ in 0..200 {
        frames.extend(masked(0, false, &piece));
    }
    let _ = ws.write_all(&frames).await; // may fail once the server has closed
                                         // Well before the 60 s idle timeout, which would otherwise be what closes it.
    let took = closed_within(ws, Duration::from_secs(10))
        .await
        .expect("the oversized fragmented message closes the connection within 10 s");
    eprintln!(
        "fragmented 3.2 MiB message: closed {took:?} after the last write, {:?} after the first",
        started.elapsed()
    );

    // Garbage to Prometheus: 400; the real request still works.
    let garbage = http_raw(
        loopback(1),
        node.prometheus_port,
        b"\x16\x03\x01garbage\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    let metrics = http_raw(
        loopback(1),
        node.prometheus_port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("weft_block_height"),
        "{}",
        metrics.body
    );
}

/// `--rpc-methods safe` leaves out the methods that change the node (`system_addReservedPeer`
/// answers "method not found"); on loopback they are served by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_rpc_methods_need_rpc_methods_unsafe() {
    use jsonrpsee::core::client::ClientT;
    let _serial = weft_tests::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let safe = weft_tests::Node::start(&dir.path().join("safe"), &["--rpc-methods", "safe"])
        .await
        .unwrap();
    let err = safe
        .client()
        .await
        .unwrap()
        .request::<(), _>("system_addReservedPeer", jsonrpsee::rpc_params![addr])
        .await
        .unwrap_err();
    match err {
        jsonrpsee::core::ClientError::Call(e) => assert_eq!(e.code(), -32601, "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let default = weft_tests::Node::start(&dir.path().join("default"), &[])
        .await
        .unwrap();
    let err = default
        .client()
        .await
        .unwrap()
        .request::<(), _>("system_addReservedPeer", jsonrpsee::rpc_params![addr])
        .await
        .unwrap_err();
    match err {
        // Served, and refused for what it is: a dev node has no peer-to-peer network.
        jsonrpsee::core::ClientError::Call(e) => {
            assert_eq!(e.code(), weft_rpc_api::BAD_REQUEST, "{e:?}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Sets the soft file-size limit (`RLIMIT_FSIZE`) of process `pid`; `None`: unlimited.
fn set_file_size_limit(pid: u32, limit: Option<u64>) {
    let value = match limit {
        Some(n) => format!("--fsize={n}:"),
        None => "--fsize=unlimited:".to_string(),
    };
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &value])
        .output()
        .expect("prlimit (util-linux)");
    assert!(
        out.status.success(),
        "prlimit {value}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_write_says_so_refuses_transactions_and_recovers() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 3).await;
    assert_eq!(rpc.system_health().await.unwrap().storage_error, None);
    assert_eq!(
        node.metric("weft_storage_writable").await.unwrap(),
        Some(1.0)
    );

    // A real I/O error: the process may not grow any file past the size of its newest
    // write-ahead log, so the next block's write fails (EFBIG, like a full disk).
    let db = std::fs::read_dir(dir.path().join("chains"))
        .unwrap()
        .map(|e| e.unwrap().path().join("db"))
        .find(|p| p.is_dir())
        .unwrap();
    let log_size = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .max()
        .expect("a write-ahead log");
    let pid = node.pid().expect("the node runs");
    set_file_size_limit(pid, Some(log_size + 1));

    // It says so: system_health and the metric.
    let error = wait_for(
        CHAIN_TIMEOUT,
        "system_health to report the failure",
        || async { rpc.system_health().await.ok()?.storage_error },
    )
    .await
    .unwrap();
    assert!(!error.is_empty());
    assert_eq!(
        node.metric("weft_storage_writable").await.unwrap(),
        Some(0.0)
    );
    // It admits no transactions meanwhile, with an error that says why.
    let genesis = rpc.block_hash(Some(0)).await.unwrap().unwrap();
    let alice = Keypair::from_suri("//Alice").unwrap();
    let bob = account("//Bob");
    let nonce = rpc.account(alice.account_id(), None).await.unwrap().nonce;
    let xt = transfer(&alice, bob, nonce, 0, genesis);
    let err = rpc
        .submit_extrinsic(Bytes(xt.encode()))
        .await
        .expect_err("a node that cannot write must not admit transactions");
    let (code, message) = call_error(err);
    assert_eq!(code, weft_rpc_api::STORAGE_FAILING, "{message}");
    // And it produces no blocks: two more failed writes, the head has not moved.
    let stuck = best_number(&rpc).await.unwrap();
    let failures = node
        .metric("weft_storage_write_failures_total")
        .await
        .unwrap()
        .unwrap();
    wait_until(CHAIN_TIMEOUT, "two more failed block writes", || async {
        node.metric("weft_storage_write_failures_total")
            .await
            .ok()
            .flatten()
            .is_some_and(|f| f >= failures + 2.0)
    })
    .await
    .unwrap();
    assert_eq!(best_number(&rpc).await, Some(stuck), "a block was written");

    // The fault goes away: the node recovers by itself, without a restart.
    set_file_size_limit(pid, None);
    wait_for_height(&rpc, stuck + 3).await;
    assert_eq!(rpc.system_health().await.unwrap().storage_error, None);
    assert_eq!(
        node.metric("weft_storage_writable").await.unwrap(),
        Some(1.0)
    );
    let bob_before = free(&rpc.account(bob, None).await.unwrap());
    rpc.submit_extrinsic(Bytes(xt.encode()))
        .await
        .expect("admitted once the node can write");
    wait_until(CHAIN_TIMEOUT, "the transfer to land", || async {
        rpc.account(bob, None)
            .await
            .is_ok_and(|a| free(&a) == bob_before + 1)
    })
    .await
    .unwrap();

    // Nothing written is lost: SIGKILL, restart, the same state.
    let head = best_number(&rpc).await.unwrap();
    drop(rpc);
    node.kill9().unwrap();
    node.restart(&[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    assert!(best_number(&rpc).await.unwrap() >= head);
    assert_eq!(free(&rpc.account(bob, None).await.unwrap()), bob_before + 1);
}
