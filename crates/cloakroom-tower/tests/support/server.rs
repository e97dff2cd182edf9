//! Serving an app on a loopback port, and the session cookie a first write sets.
//!
//! (Shared by `tests/tests.rs`, `tests/contended.rs` and `benches/tower`, which include this
//! file as a module of their own.)

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::Router;

/// Serves `router` on a free port of 127.0.0.1 until the runtime ends.
pub(crate) async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The `name=value` of the first `Set-Cookie` line of `headers`.
pub(crate) fn cookie_pair(headers: &HeaderMap) -> Option<String> {
    let line = headers.get("set-cookie")?.to_str().ok()?;
    line.split(';').next().map(str::to_owned)
}

/// POSTs to `url` with no cookie: the `name=value` of the session cookie the write sets.
///
/// # Panics
///
/// If the answer is not 2xx or sets no cookie, naming `who`.
// contended.rs and the benchmark use it; tests.rs, which includes this file too, does not.
#[allow(dead_code)]
pub(crate) async fn first_write_cookie(client: &reqwest::Client, url: &str, who: &str) -> String {
    let reply = client.post(url).send().await.expect("the server answers");
    assert!(reply.status().is_success(), "{who}: {}", reply.status());
    let cookie = cookie_pair(reply.headers())
        .unwrap_or_else(|| panic!("{who}: the first write sets the session cookie"));
    reply.bytes().await.unwrap();
    cookie
}
