//! The one app, built twice: on Cloakroom's `SessionLayer` and on tower-sessions'
//! `SessionManagerLayer`. `GET /read` reads a counter from the session, `POST /write` adds one.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::counted::{Counted, CALLS};

pub(crate) fn cloakroom_app(store: Arc<dyn cloakroom::Store>) -> Router {
    let store: Arc<dyn cloakroom::Store> = match CALLS.get() {
        Some(calls) => Counted::new(store, calls.clone()),
        None => store,
    };
    use cloakroom_tower::{Error, Session, SessionLayer};
    async fn read(s: Session) -> Result<String, Error> {
        Ok(s.get::<u64>("counter")?.unwrap_or(0).to_string())
    }
    async fn write(s: Session) -> Result<String, Error> {
        let n = s.get::<u64>("counter")?.unwrap_or(0) + 1;
        s.insert("counter", &n)?;
        Ok(n.to_string())
    }
    let layer = SessionLayer::builder()
        .key_ring(&cloakroom::KeyRing::generate().unwrap())
        .store(store)
        .insecure_plain_http_for_local_development()
        .build()
        .unwrap();
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(layer)
}

pub(crate) fn tower_sessions_app<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    use axum::http::StatusCode;
    use tower_sessions::{Session, SessionManagerLayer};
    async fn read(s: Session) -> Result<String, StatusCode> {
        let n: Option<u64> = s
            .get("counter")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(n.unwrap_or(0).to_string())
    }
    async fn write(s: Session) -> Result<String, StatusCode> {
        let n: u64 = s
            .get("counter")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
            .unwrap_or(0)
            + 1;
        s.insert("counter", n)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(n.to_string())
    }
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(SessionManagerLayer::new(store).with_secure(false))
}
