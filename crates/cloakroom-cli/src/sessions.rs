//! `sessions list|show|end`, `users revoke` and `stats`: the operator's view of a store.

use anyhow::{anyhow, bail};
use cloakroom::{check_id_prefix, Record, Store};
use serde_json::json;

use crate::cli::{SessionsCommand, StoreArg, UsersCommand};
use crate::store::{failed, now, open_existing, runtime};
use crate::{table, Failure};

/// How many hex digits of the id hash a table shows (enough to be unique in practice, and
/// what `sessions show` / `end` take back).
const SHOWN_PREFIX: usize = 12;

fn record_json(r: &Record) -> serde_json::Value {
    json!({
        "id_hash": r.id_hash.to_hex(),
        "user_id": r.user_id,
        "created": r.created,
        "last_seen": r.last_seen,
        "idle_deadline": r.idle_deadline,
        "absolute_deadline": r.absolute_deadline,
        "expires": r.expires_at(),
        "device_label": r.device.label,
        "user_agent": r.device.user_agent,
        "ip": r.device.ip,
    })
}

fn row(r: &Record) -> Vec<String> {
    let mut id = r.id_hash.to_hex();
    id.truncate(SHOWN_PREFIX);
    vec![
        id,
        table::time(r.created),
        table::time(r.last_seen),
        table::time(r.expires_at()),
        table::text(r.device.label.as_deref(), 24),
        table::text(r.device.user_agent.as_deref(), 60),
    ]
}

const HEADER: [&str; 6] = [
    "ID",
    "CREATED",
    "LAST SEEN",
    "EXPIRES",
    "DEVICE",
    "USER AGENT",
];

/// Checks a prefix typed by an operator (upper-case hex is accepted and lowered).
fn prefix_arg(prefix: &str) -> anyhow::Result<String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    check_id_prefix(&prefix).map_err(|e| anyhow!("{e}"))?;
    Ok(prefix)
}

/// The one live session whose id hash starts with `prefix`; none is exit 1, several is
/// exit 2 listing them.
async fn find_one(store: &dyn Store, prefix: &str, now: u64) -> Result<Record, Failure> {
    let mut found = store
        .find_by_prefix(prefix, now)
        .await
        .map_err(failed("finding the session"))?;
    match found.len() {
        0 => Err(Failure::NotFound(format!(
            "no live session's id hash starts with {prefix}"
        ))),
        1 => Ok(found.remove(0)),
        n => {
            found.sort_by_key(|r| r.id_hash);
            let list: Vec<String> = found
                .iter()
                .take(20)
                .map(|r| {
                    format!(
                        "{} (user {}, last seen {})",
                        r.id_hash.to_hex(),
                        r.user_id.as_deref().unwrap_or("-"),
                        table::time(r.last_seen)
                    )
                })
                .collect();
            let more = if n > 20 {
                format!(", and {} more", n - 20)
            } else {
                String::new()
            };
            Err(Failure::Usage(anyhow!(
                "the prefix {prefix} is ambiguous: {n} sessions match: {}{more}; give more digits",
                list.join(", ")
            )))
        }
    }
}

pub(crate) fn sessions(command: SessionsCommand) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        match command {
            SessionsCommand::List { user, store, json } => {
                let s = open_existing(&store.url).await?;
                let mut list = s
                    .sessions_of(&user, now()?)
                    .await
                    .map_err(failed("listing the sessions"))?;
                list.sort_by_key(|r| (r.created, r.id_hash));
                if json {
                    let out: Vec<_> = list.iter().map(record_json).collect();
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else if list.is_empty() {
                    eprintln!("{user:?} has no live session");
                } else {
                    let rows: Vec<_> = list.iter().map(row).collect();
                    table::print(&HEADER, &rows);
                }
                Ok(())
            }
            SessionsCommand::Show {
                prefix,
                store,
                json,
            } => {
                let prefix = prefix_arg(&prefix)?;
                let s = open_existing(&store.url).await?;
                let r = find_one(&*s, &prefix, now()?).await?;
                let keys: Vec<&str> = r.data.keys().map(String::as_str).collect();
                if json {
                    let mut out = record_json(&r);
                    out["version"] = json!(r.version);
                    out["user_epoch"] = json!(r.user_epoch);
                    out["data_keys"] = json!(keys);
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    return Ok(());
                }
                let c = table::colour();
                let field = |name: &str, value: String| {
                    println!("{}  {value}", table::bold(&format!("{name:<17}"), c));
                };
                field("id hash", r.id_hash.to_hex());
                field("user", table::text(r.user_id.as_deref(), 200));
                field("user epoch", r.user_epoch.to_string());
                field("created", table::time(r.created));
                field("last seen", table::time(r.last_seen));
                field("idle deadline", table::time(r.idle_deadline));
                field("absolute deadline", table::time(r.absolute_deadline));
                field("version", r.version.to_string());
                field("device", table::text(r.device.label.as_deref(), 200));
                field(
                    "user agent",
                    table::text(r.device.user_agent.as_deref(), 500),
                );
                field("ip", table::text(r.device.ip.as_deref(), 100));
                field(
                    "data keys",
                    if keys.is_empty() {
                        "-".to_owned()
                    } else {
                        keys.join(", ")
                    },
                );
                Ok(())
            }
            SessionsCommand::End { prefix, store } => {
                let prefix = prefix_arg(&prefix)?;
                let s = open_existing(&store.url).await?;
                let r = find_one(&*s, &prefix, now()?).await?;
                let deleted = s
                    .delete(&r.id_hash)
                    .await
                    .map_err(failed("ending the session"))?;
                if deleted {
                    println!(
                        "ended session {} (user {})",
                        r.id_hash.to_hex(),
                        r.user_id.as_deref().unwrap_or("-")
                    );
                    Ok(())
                } else {
                    Err(Failure::NotFound(format!(
                        "session {} ended before it could be ended here",
                        r.id_hash.to_hex()
                    )))
                }
            }
        }
    })
}

pub(crate) fn users(command: UsersCommand) -> Result<(), Failure> {
    let UsersCommand::Revoke {
        user,
        except,
        store,
    } = command;
    let rt = runtime()?;
    rt.block_on(async {
        let s = open_existing(&store.url).await?;
        let Some(except) = except else {
            // As SessionManager::revoke_user: bump first, so a login racing this either sees
            // the new epoch or is deleted below.
            let epoch = s
                .bump_user_epoch(&user)
                .await
                .map_err(failed("bumping the user's epoch"))?;
            let ended = s
                .revoke_user_sessions(&user, None)
                .await
                .map_err(failed("ending the sessions"))?;
            println!("ended {ended} session(s) of {user} (user epoch now {epoch})");
            return Ok(());
        };
        let prefix = prefix_arg(&except)?;
        let kept = find_one(&*s, &prefix, now()?).await?;
        if kept.user_id.as_deref() != Some(user.as_str()) {
            return Err(Failure::Usage(anyhow!(
                "--except {prefix} is a session of {}, not of {user}",
                kept.user_id.as_deref().unwrap_or("nobody (anonymous)")
            )));
        }
        let ended = s
            .revoke_user_sessions(&user, Some(&kept.id_hash))
            .await
            .map_err(failed("ending the sessions"))?;
        println!(
            "ended {ended} session(s) of {user}, kept {} (user epoch unchanged)",
            &kept.id_hash.to_hex()[..SHOWN_PREFIX]
        );
        Ok(())
    })
}

pub(crate) fn stats(store: &StoreArg, json: bool) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        let s = open_existing(&store.url).await?;
        let st = s
            .stats(now()?)
            .await
            .map_err(failed("counting the sessions"))?;
        let name = cloakroom_stores::StoreUrl::parse(&store.url)
            .map(|u| format!("{u:?}"))
            .unwrap_or_default();
        if json {
            let out = json!({
                "store": name,
                "live": st.live,
                "expired_not_purged": st.expired_not_purged,
                "bytes": st.bytes,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let c = table::colour();
        let field = |label: &str, value: String| {
            println!("{}  {value}", table::bold(&format!("{label:<19}"), c));
        };
        field("store", name);
        field("live", st.live.to_string());
        field("expired, not purged", st.expired_not_purged.to_string());
        field(
            "bytes",
            st.bytes
                .map_or_else(|| "unknown".to_owned(), |b| format!("{b} ({})", human(b))),
        );
        Ok(())
    })
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuses a `--batch` of 0 and such (clap already bounds it; this is for library callers).
pub(crate) fn positive(n: u64, what: &str) -> anyhow::Result<usize> {
    if n == 0 {
        bail!("{what} must be at least 1");
    }
    usize::try_from(n).map_err(|_| anyhow!("{what} is too large"))
}
