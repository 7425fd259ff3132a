//! The web dashboard, served on the RPC port (issue 14): a plain `GET` (or `HEAD`) of `/`,
//! `/index.html`, `/style.css` or one of the page's modules (`/app.js`, …) is answered here
//! with the static assets of
//! `node/dashboard/`, built into the binary, so the page works on a machine with no network
//! beyond the node. Everything else — JSON-RPC `POST`s, WebSocket upgrades, other paths —
//! goes on to jsonrpsee unchanged. `--no-dashboard` turns it off.
//!
//! The page is plain ES modules with no dependencies (`app.js` routes, `rpc.js` is the
//! client, `ui.js` and `chart.js` draw, one module per page): it opens one WebSocket to the
//! origin it was loaded from and uses the node's public JSON-RPC, calls for what a page shows
//! and subscriptions (`chain_subscribeNewHeads`, `chain_subscribeFinalizedHeads`) for what
//! changes live. It signs nothing and holds no key; the playground's completions come from
//! the user's own `weft gateway`, which pays.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Response};
use jsonrpsee::server::HttpBody;

/// The page.
const INDEX: &str = include_str!("../../dashboard/index.html");
const JS: &str = "text/javascript; charset=utf-8";

/// The assets: `(path, content type, body)`. Every module the page imports is here (a unit
/// test reads their `import`s).
const ASSETS: [(&str, &str, &str); 11] = [
    ("/", "text/html; charset=utf-8", INDEX),
    ("/index.html", "text/html; charset=utf-8", INDEX),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../dashboard/style.css"),
    ),
    ("/app.js", JS, include_str!("../../dashboard/app.js")),
    ("/rpc.js", JS, include_str!("../../dashboard/rpc.js")),
    ("/ui.js", JS, include_str!("../../dashboard/ui.js")),
    ("/chart.js", JS, include_str!("../../dashboard/chart.js")),
    ("/chain.js", JS, include_str!("../../dashboard/chain.js")),
    ("/runs.js", JS, include_str!("../../dashboard/runs.js")),
    (
        "/account.js",
        JS,
        include_str!("../../dashboard/account.js"),
    ),
    (
        "/playground.js",
        JS,
        include_str!("../../dashboard/playground.js"),
    ),
];

/// The dashboard's answer to `method` of `path`, if it is one of its assets.
pub fn answer(method: &Method, path: &str) -> Option<Response<HttpBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let body = if method == Method::HEAD {
        HttpBody::default()
    } else {
        HttpBody::from(body.to_string())
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_answered_for_gets_only() {
        let r = answer(&Method::GET, "/").unwrap();
        assert_eq!(
            r.headers().get(CONTENT_TYPE).unwrap(),
            "text/html; charset=utf-8"
        );
        for (path, _, _) in ASSETS {
            assert!(answer(&Method::GET, path).is_some(), "{path}");
            assert!(answer(&Method::HEAD, path).is_some(), "{path}");
        }
        assert!(answer(&Method::POST, "/").is_none());
        assert!(answer(&Method::GET, "/metrics").is_none());
        assert!(answer(&Method::GET, "/../Cargo.toml").is_none());
    }

    #[test]
    fn the_page_loads_its_module_from_the_node_itself() {
        assert!(INDEX.contains(r#"src="/app.js""#));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        let mut imported = 0;
        for (path, content_type, body) in ASSETS {
            if content_type != JS {
                continue;
            }
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.split(" from \"./").nth(1).unwrap();
                let module = format!("/{}", from.split('"').next().unwrap());
                assert!(
                    answer(&Method::GET, &module).is_some(),
                    "{path} imports {module}, which is not served"
                );
                imported += 1;
            }
        }
        assert!(imported >= 7, "{imported}");
    }
}
