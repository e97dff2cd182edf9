//! Unit tests of the Redis store: scripts, slots, URLs.

use std::path::PathBuf;

use super::*;

/// Redis Cluster runs a script only if every key it touches is in one slot, and only if
/// the script names its keys in `KEYS`: every script here must touch `KEYS[1]` alone
/// (and build no key names of its own), but for the two purge-index scripts, which touch
/// `KEYS[1]` and `KEYS[2]`: a bucket and its shard's directory, which share a hash tag
/// (`a_buckets_keys_share_a_slot`).
#[test]
fn every_script_touches_its_one_key() {
    let scripts = Scripts::new();
    let two_keys = [&scripts.index.sha, &scripts.forget.sha];
    for script in scripts.all() {
        let src = &script.source;
        let keys = if two_keys.contains(&&script.sha) {
            2
        } else {
            1
        };
        let mut rest = src.as_str();
        while let Some(i) = rest.find("KEYS[") {
            rest = &rest[i + 5..];
            let n = rest
                .split_once(']')
                .and_then(|(n, _)| n.parse::<usize>().ok());
            assert!(
                n.is_some_and(|n| (1..=keys).contains(&n)),
                "a script uses another key: {src}"
            );
        }
        assert!(!src.contains("#KEYS"), "{src}");
        // Key names built in Lua (from ARGV or a prefix) would escape the check above.
        for call in ["redis.call('", "redis.pcall('"] {
            for (i, _) in src.match_indices(call) {
                let args = &src[i + call.len()..];
                let first_arg = args.split_once(',').map_or("", |(_, a)| a.trim_start());
                assert!(
                    first_arg.starts_with("KEYS[1]")
                        || (keys == 2 && first_arg.starts_with("KEYS[2]"))
                        || first_arg.starts_with("key")
                        || args.starts_with("TYPE'")
                        || first_arg.is_empty(),
                    "a Redis call on something other than KEYS[1]: {}",
                    &args[..args.len().min(60)]
                );
            }
        }
    }
}

/// A user's index and epoch share a slot whatever the user id holds (braces included),
/// and the record keys of two sessions need not.
#[tokio::test]
async fn a_users_keys_share_a_slot() {
    let store_keys = |user: &str| {
        let prefix = "p:";
        let key = |what: &str| {
            let mut k = prefix.as_bytes().to_vec();
            k.extend_from_slice(b"{u:");
            k.extend_from_slice(user.as_bytes());
            k.extend_from_slice(b"}:");
            k.extend_from_slice(what.as_bytes());
            k
        };
        (key("sessions"), key("epoch"))
    };
    for user in ["alice", "", "a}b", "{x}", "}}", "ü", "a:b{c}d"] {
        let (index, epoch) = store_keys(user);
        assert_eq!(Slot::for_key(&index), Slot::for_key(&epoch), "{user:?}");
    }
}

/// The purge index: a bucket and its shard's directory share a slot (the two-key scripts
/// need it), the shards of one hour are spread over several slots, and an id hash's shard
/// is read from its hex as from its bytes.
#[test]
fn a_buckets_keys_share_a_slot() {
    // A prefix with braces of its own: the first `{...}` is the hash tag.
    let prefix = "p:{x}:";
    let mut slots = std::collections::HashSet::new();
    for shard in 0..SHARDS {
        for bucket in [0, 472_222, u64::MAX / BUCKET_SECS] {
            let b = bucket_key(prefix, shard, bucket);
            assert_eq!(
                Slot::for_key(b.as_bytes()),
                Slot::for_key(directory_key(prefix, shard).as_bytes()),
                "{b}"
            );
        }
        slots.insert(Slot::for_key(bucket_key("p:", shard, 472_222).as_bytes()));
    }
    assert_eq!(slots.len(), usize::from(SHARDS), "one slot per shard");
    for byte in 0..=255u8 {
        let mut raw = [0u8; 32];
        raw[0] = byte;
        let id = IdHash::from_bytes(raw);
        assert_eq!(shard_of_hex(id.to_hex().as_bytes()), Some(shard_of(&id)));
    }
}

#[test]
fn cluster_urls_name_their_nodes() {
    let t = Target::parse("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001", false).unwrap();
    assert!(t.cluster && !t.tls);
    assert_eq!(
        t.nodes,
        ["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]
    );
    let t = Target::parse("rediss+cluster://a:1,b:2/?ca=/x.pem&protocol=resp3", false).unwrap();
    assert!(t.cluster && t.tls);
    assert_eq!(
        t.nodes,
        ["rediss://a:1?protocol=resp3", "rediss://b:2?protocol=resp3"]
    );
    assert_eq!(t.options.ca, Some(PathBuf::from("/x.pem")));
    let t = Target::parse("redis://127.0.0.1:7000", true).unwrap();
    assert!(t.cluster);
    let t = Target::parse("rediss://h:6380/2", false).unwrap();
    assert!(!t.cluster && t.tls);
    assert_eq!(t.nodes, ["rediss://h:6380/2"]);
    for bad in [
        "redis+cluster://a:1/3",
        "redis+cluster://",
        "unix+cluster:///x",
        "h:1",
    ] {
        let err = Target::parse(bad, false).err().expect(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
    }
}

#[test]
fn plaintext_to_a_remote_host_is_refused() {
    for ok in [
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "redis://[::1]:6379",
    ] {
        check_plaintext(ok, false).unwrap();
    }
    check_plaintext("rediss://cache.example:6380", false).unwrap();
    let err = check_plaintext("redis://cache.example:6379", false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("allow_plaintext_to_remote_host"),
        "{err}"
    );
    check_plaintext("redis://cache.example:6379", true).unwrap();
}

#[test]
fn commands_find_their_slot() {
    let mut c = redis::cmd("EVALSHA");
    c.arg("abc").arg(1).arg("p:{r:01}").arg("x");
    assert_eq!(slot_of(&c), Some(Slot::for_key("p:{r:01}")));
    let mut c = redis::cmd("ZADD");
    c.arg("p:{u:a}:sessions").arg(1).arg("m");
    assert_eq!(slot_of(&c), Some(Slot::for_key("p:{u:a}:sessions")));
    assert!(!reads_only(&c));
    let mut c = redis::cmd("HGETALL");
    c.arg("k");
    assert!(reads_only(&c));
    // A subcommand before the key (`stats` sends these for keys of every slot; two of them
    // once counted as one slot, that of the word USAGE, and went as one cross-slot pipeline).
    let mut c = redis::cmd("MEMORY");
    c.arg("USAGE").arg("p:{r:02}").arg("SAMPLES").arg(0);
    assert_eq!(slot_of(&c), Some(Slot::for_key("p:{r:02}")));
}

/// Errors are classified by the client's error kind, never by words in their text: an I/O
/// failure whose message happens to say WRONGTYPE or "not an integer" is the server being
/// unreachable (Unavailable), not data of another kind (Corrupt).
#[test]
fn errors_are_classified_by_kind_not_by_text() {
    let io = redis::RedisError::from((
        redis::ErrorKind::Io,
        "connection reset",
        "WRONGTYPE value is not an integer".to_owned(),
    ));
    assert_eq!(map_err("load", io).kind(), ErrorKind::Unavailable);
    let cluster_down = redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
        "WRONGTYPE",
    ));
    assert_eq!(map_err("load", cluster_down).kind(), ErrorKind::Unavailable);
    let wrong_type = redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "a string where a hash was expected",
    ));
    assert_eq!(map_err("load", wrong_type).kind(), ErrorKind::Corrupt);
}
