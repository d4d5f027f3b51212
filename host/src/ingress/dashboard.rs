//! The dashboard `levee up` serves at `/`: one page and its assets, embedded in the binary (no
//! CDN, no network: it works offline).
//!
//! The page and its assets are static and served without a key. Every data call the page makes
//! (`GET /v1/status`, `GET /v1/alerts`, `GET /metrics`) carries `Authorization: Bearer <key>`;
//! the page takes the key from the URL fragment (`/#key=lvk_…`, which a browser never sends) or
//! from a small form, and keeps it in `sessionStorage`. Every answer has a strict
//! Content-Security-Policy (`default-src 'self'`): no inline script or style, nothing from
//! another origin.

use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::routes::Resp;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const FAVICON_SVG: &str = include_str!("dashboard/favicon.svg");

/// The policy of every dashboard answer: this origin only, no inline code, no framing.
pub const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'; object-src 'none'";

/// The page, with the version of this binary in it.
static INDEX: LazyLock<String> =
    LazyLock::new(|| INDEX_HTML.replace("{{version}}", env!("CARGO_PKG_VERSION")));

/// The files under `/dashboard/`.
pub const ASSETS: [&str; 3] = ["app.js", "style.css", "favicon.svg"];

/// One embedded file: its content type and text. `""` is the page itself (`GET /`).
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "" => ("text/html; charset=utf-8", INDEX.as_str()),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "favicon.svg" => ("image/svg+xml", FAVICON_SVG),
        _ => return None,
    })
}

/// Whether `name` is a dashboard file (`""` for the page).
pub fn exists(name: &str) -> bool {
    file(name).is_some()
}

/// The answer for a dashboard file; `None` when there is no such file.
pub fn serve(name: &str) -> Option<Resp> {
    let (content_type, text) = file(name)?;
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response");
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files: revalidated every load, so a new binary's page is used at once.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_headers() {
        for name in std::iter::once("").chain(ASSETS) {
            let r = serve(name).expect(name);
            let h = r.headers();
            assert!(h[CONTENT_TYPE].to_str().unwrap().contains('/'), "{name}");
            assert_eq!(h[CACHE_CONTROL], "no-cache");
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .starts_with("default-src 'self'")
            );
        }
        assert!(serve("nope.js").is_none());
        assert!(serve("../mod.rs").is_none());
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains(env!("CARGO_PKG_VERSION")));
        assert!(!INDEX.contains("{{version}}"));
        for asset in ASSETS {
            assert!(INDEX.contains(&format!("/dashboard/{asset}")), "{asset}");
        }
        for text in [INDEX.as_str(), APP_JS, STYLE_CSS] {
            // Nothing from another origin (the SVG namespace is a name, not a load).
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("style=\""), "no inline style (CSP)");
        }
        assert!(!INDEX.contains("<script>"), "no inline script (CSP)");
        assert!(!INDEX.contains("onclick"), "no inline handlers (CSP)");
    }
}
