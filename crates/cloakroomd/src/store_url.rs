//! Opening the store a URL names. Until `cloakroom_stores::open` lands on main, a local
//! stand-in with its signature (deleted at the merge).

use std::sync::Arc;

use cloakroom::{Error, ErrorKind, Store};

pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a store URL starts with a scheme",
        ));
    };
    let path = rest.strip_prefix("//").unwrap_or(rest).to_owned();
    match scheme {
        "sqlite" => Ok(Arc::new(cloakroom_stores::SqliteStore::open(path).await?)),
        "file" => Ok(Arc::new(cloakroom_stores::FileStore::open(path).await?)),
        "redis" => Ok(Arc::new(
            cloakroom_stores::RedisStore::connect(url.to_owned()).await?,
        )),
        "postgres" | "postgresql" => Ok(Arc::new(
            cloakroom_stores::PostgresStore::connect(url.to_owned()).await?,
        )),
        "memcache" => Ok(Arc::new(
            cloakroom_stores::MemcachedStore::connect(path).await?,
        )),
        other => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("unknown store URL scheme `{other}:`"),
        )),
    }
}
