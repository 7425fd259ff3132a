//! The web dashboard, served on the RPC port (issue 14): a plain `GET` (or `HEAD`) of `/`,
//! `/index.html`, `/app.js` or `/style.css` is answered here with the static assets of
//! `node/dashboard/`, built into the binary, so the page works on a machine with no network
//! beyond the node. Everything else — JSON-RPC `POST`s, WebSocket upgrades, other paths —
//! goes on to jsonrpsee unchanged. `--no-dashboard` turns it off.
//!
//! The page is one ES module with no dependencies (`app.js`): it opens one WebSocket to the
//! origin it was loaded from and uses the node's public JSON-RPC, calls for what a page shows
//! and subscriptions (`chain_subscribeNewHeads`, `chain_subscribeFinalizedHeads`) for what
//! changes live. It signs nothing and holds no key.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Response};
use jsonrpsee::server::HttpBody;

/// The assets: `(path, content type, body)`.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../dashboard/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../dashboard/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../dashboard/style.css"),
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
        for path in ["/index.html", "/app.js", "/style.css"] {
            assert!(answer(&Method::GET, path).is_some(), "{path}");
            assert!(answer(&Method::HEAD, path).is_some(), "{path}");
        }
        assert!(answer(&Method::POST, "/").is_none());
        assert!(answer(&Method::GET, "/metrics").is_none());
        assert!(answer(&Method::GET, "/../Cargo.toml").is_none());
    }

    #[test]
    fn the_page_loads_its_module_from_the_node_itself() {
        let (_, _, index) = ASSETS[0];
        assert!(index.contains(r#"src="/app.js""#));
        assert!(!index.contains("http://") && !index.contains("https://"));
    }
}
