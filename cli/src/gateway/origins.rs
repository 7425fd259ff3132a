//! Which web pages may call the gateway (cross-origin requests, CORS).
//!
//! The gateway pays every request with its key, so a web page the user happens to open must
//! not be able to spend the user's credentials through it. Browsers name the page a request
//! comes from in its `Origin` header (every cross-origin `fetch`, every form `POST`), so:
//!
//! | request | answer |
//! |---|---|
//! | no `Origin` (curl, SDKs, same-origin `GET`) | served as always |
//! | `Origin` listed with `--allow-origin` | served, with `Access-Control-Allow-Origin: <origin>` and `Vary: Origin` |
//! | `OPTIONS` preflight from a listed origin | 204 with the methods (`GET, POST`) and headers (`content-type`, `authorization`) a page may use |
//! | any other `Origin` | 403 `origin_not_allowed`, nothing paid |
//!
//! The dashboard's playground (served by the node, e.g. `http://127.0.0.1:9944`) works once
//! the gateway lists that origin.

use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use hyper::{HeaderMap, StatusCode};

/// Why an origin given to `--allow-origin` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Not `http://host[:port]` or `https://host[:port]`.
    #[error("{0:?} is not an origin: give scheme, host and port only, e.g. http://127.0.0.1:9944")]
    Malformed(String),
}

/// The origins whose pages may call the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

/// What a request's `Origin` header admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No `Origin`: not a cross-origin page.
    NoOrigin,
    /// A listed origin: the answer names it.
    Allowed(HeaderValue),
}

impl AllowedOrigins {
    /// Parses `--allow-origin` values: `http(s)://host[:port]`, a trailing `/` dropped.
    pub fn parse(values: &[String]) -> Result<Self, OriginError> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let o = v.trim().trim_end_matches('/');
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .ok_or_else(|| OriginError::Malformed(v.clone()))?;
            if rest.is_empty()
                || rest.contains(['/', '?', '#', '@', ' '])
                || HeaderValue::from_str(o).is_err()
            {
                return Err(OriginError::Malformed(v.clone()));
            }
            out.push(o.to_ascii_lowercase());
        }
        Ok(AllowedOrigins(out))
    }

    /// The request's admission, or the origin it names when that is not listed.
    pub fn admit(&self, headers: &HeaderMap) -> Result<Admission, String> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(Admission::NoOrigin);
        };
        let text = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        if self.0.contains(&text) {
            Ok(Admission::Allowed(origin.clone()))
        } else {
            Err(text)
        }
    }
}

/// Adds the headers that let the page of `origin` read the answer.
pub fn expose(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a preflight from an allowed origin: status and headers.
pub fn preflight(headers: &mut HeaderMap, origin: HeaderValue) -> StatusCode {
    expose(headers, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    StatusCode::NO_CONTENT
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn listed_origins_are_admitted_and_others_named() {
        let a = AllowedOrigins::parse(&["http://127.0.0.1:9944/".into()]).unwrap();
        assert_eq!(a.admit(&HeaderMap::new()), Ok(Admission::NoOrigin));
        assert!(matches!(
            a.admit(&with_origin("http://127.0.0.1:9944")),
            Ok(Admission::Allowed(_))
        ));
        assert_eq!(
            a.admit(&with_origin("https://evil.example")),
            Err("https://evil.example".to_string())
        );
        assert!(AllowedOrigins::default()
            .admit(&with_origin("http://127.0.0.1:9944"))
            .is_err());
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            "127.0.0.1:9944",
            "http://",
            "http://h/path",
            "ftp://h",
            "http://a b",
        ] {
            assert_eq!(
                AllowedOrigins::parse(&[bad.into()]),
                Err(OriginError::Malformed(bad.into())),
                "{bad}"
            );
        }
    }
}
