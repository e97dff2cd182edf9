//! What the two test binaries (`tests.rs`, `contended.rs`) share: the wrapping store, the
//! server, a handler both route, and the stores on the shared test servers.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Path;
use cloakroom_tower::{Error, Session, Store};

pub(crate) mod hooked;
pub(crate) mod server;

/// `POST /set/{key}/{value}`: stores `value` under `key`.
pub(crate) async fn set_key(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, Error> {
    session.insert(&key, &value)?;
    Ok("ok")
}

/// A name no other test run uses, for key prefixes and schemas on the shared servers.
pub(crate) fn unique(base: &str) -> String {
    format!(
        "{base}{}_{}",
        std::process::id(),
        &cloakroom::SessionId::generate().unwrap().hash().to_hex()[..12]
    )
}

/// A store on the shared test Redis (`CLOAKROOM_TEST_REDIS`) under a key prefix of its own,
/// made from `base`.
pub(crate) async fn redis(base: &str) -> Arc<dyn Store> {
    let url = std::env::var("CLOAKROOM_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let store = cloakroom_stores::RedisStore::builder(url.as_str())
        .with_prefix(format!("{}:", unique(base)))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no Redis at {url} ({e}); start one with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no (or run scripts/test --setup-only), or set CLOAKROOM_TEST_REDIS"
            )
        });
    Arc::new(store)
}

/// Runs `test` on a store in a schema of its own (made from `base`) on the shared test
/// PostgreSQL (`CLOAKROOM_TEST_POSTGRES`); the schema goes whatever the outcome.
pub(crate) async fn on_postgres<F, Fut>(base: &str, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = std::env::var("CLOAKROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".to_owned());
    let schema = unique(base);
    let store = cloakroom_stores::PostgresStore::builder(url.as_str())
        .with_schema(schema.clone())
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL at {url} ({e}); start it with scripts/test --setup-only, or set CLOAKROOM_TEST_POSTGRES")
        });
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let outcome = tokio::spawn(test(Arc::new(store))).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
