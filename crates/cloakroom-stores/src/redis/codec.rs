//! A record as Redis holds it: the hash's fields, and decoding them back.

use super::*;

/// A record as the scripts take it: the fields of the hash.
pub(super) struct Fields {
    /// The record without its data.
    pub(super) d: Vec<u8>,
    /// The data: (`k:<key>`, MessagePack value) pairs.
    pub(super) data: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) v: String,
    pub(super) u: Vec<u8>,
    pub(super) l: String,
    pub(super) i: String,
    pub(super) a: String,
    pub(super) e: String,
    pub(super) ttl_ms: String,
}

impl Fields {
    /// The script arguments of a record write: `before` (a script's own leading arguments),
    /// then d, v, u, l, i, a, e and the TTL in milliseconds.
    pub(super) fn args<'a>(&'a self, before: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let mut args = before.to_vec();
        args.extend_from_slice(&[
            &self.d,
            self.v.as_bytes(),
            &self.u,
            self.l.as_bytes(),
            self.i.as_bytes(),
            self.a.as_bytes(),
            self.e.as_bytes(),
            self.ttl_ms.as_bytes(),
        ]);
        args
    }
}

pub(super) fn tagged_user(user: Option<&str>) -> Vec<u8> {
    match user {
        Some(u) => {
            let mut out = Vec::with_capacity(u.len() + 1);
            out.push(b'+');
            out.extend_from_slice(u.as_bytes());
            out
        }
        None => b"-".to_vec(),
    }
}

pub(super) fn untag_user(tagged: &[u8]) -> Option<String> {
    match tagged.split_first() {
        Some((b'+', rest)) => String::from_utf8(rest.to_vec()).ok(),
        _ => None,
    }
}

pub(super) fn ttl_ms(deadline: u64, reference: u64) -> u64 {
    deadline
        .saturating_sub(reference)
        .clamp(0, MAX_TTL_SECS)
        .saturating_mul(1000)
        .max(1)
}

/// The hash field of data key `key`.
pub(super) fn data_field(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_FIELD.len() + key.len());
    out.extend_from_slice(DATA_FIELD);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The prefix of data fields.
pub(super) const DATA_FIELD: &[u8] = b"k:";

pub(super) fn encode_value(key: &str, value: &cloakroom::Value) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("the value of session key {key:?} does not encode"),
        )
        .with_source(e)
    })
}

pub(super) fn fields(record: &Record, version: u64, reference: u64) -> Result<Fields, Error> {
    let mut stored = record.clone();
    stored.version = version;
    let data = std::mem::take(&mut stored.data)
        .iter()
        .map(|(k, v)| Ok((data_field(k), encode_value(k, v)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Fields {
        d: stored.encode()?,
        data,
        v: version.to_string(),
        u: tagged_user(record.user_id.as_deref()),
        l: record.last_seen.to_string(),
        i: record.idle_deadline.to_string(),
        a: record.absolute_deadline.to_string(),
        e: record.expires_at().to_string(),
        ttl_ms: ttl_ms(record.expires_at(), reference).to_string(),
    })
}

pub(crate) fn map_err(
    what: impl Into<std::borrow::Cow<'static, str>>,
    e: redis::RedisError,
) -> Error {
    // Classified by the client's error kind, never by the message text. WRONGTYPE (a key
    // of ours holding another type) is an error code the client does not name, so it comes
    // as an extension error with that code. Everything else (I/O, timeouts, dropped
    // connections, cluster redirections that ran out, LOADING, READONLY...) means the
    // server cannot serve us now.
    let not_ours = match e.kind() {
        // In a pipeline: any of its commands answered WRONGTYPE.
        redis::ErrorKind::Extension => e.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, error)| error.kind().is_none() && error.code() == "WRONGTYPE")
        }),
        redis::ErrorKind::UnexpectedReturnType => true,
        _ => false,
    };
    if not_ours {
        Error::corrupt(what, e)
    } else {
        Error::unavailable(what, e)
    }
}

pub(super) fn not_ours(key: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the Redis key {key} holds something this store did not write"),
    )
}

pub(super) fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("unexpected reply from Redis to {what}"),
    )
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

pub(super) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `[status, ...]` from a script.
pub(super) fn status(v: &Value) -> Option<(i64, &[Value])> {
    match v {
        Value::Array(items) => {
            let (first, rest) = items.split_first()?;
            Some((int(first)?, rest))
        }
        _ => None,
    }
}

pub(super) fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl RedisStore {
    /// Decodes the `HGETALL` reply of a record key.
    pub(crate) fn decode(
        &self,
        id: &IdHash,
        reply: &Value,
        now: u64,
    ) -> Result<Option<Record>, Error> {
        let pairs: Vec<(&Value, &Value)> = match reply {
            Value::Array(items) if items.len() % 2 == 0 => {
                items.chunks_exact(2).map(|c| (&c[0], &c[1])).collect()
            }
            Value::Map(entries) => entries.iter().map(|(k, v)| (k, v)).collect(),
            _ => return Err(unexpected("HGETALL")),
        };
        if pairs.is_empty() {
            return Ok(None);
        }
        // The key is formatted only for an error: a load that succeeds allocates no key name.
        let not_ours = || not_ours(&self.record_key(id));
        let (mut d, mut l, mut i, mut v, mut layout) = (None, None, None, None, None);
        let mut data = Vec::new();
        for (name, value) in pairs {
            let (Some(name), Some(value)) = (bytes(name), bytes(value)) else {
                return Err(unexpected("HGETALL"));
            };
            match name {
                b"d" => d = Some(value),
                b"l" => l = Some(value),
                b"i" => i = Some(value),
                b"v" => v = Some(value),
                b"f" => layout = Some(value),
                _ => {
                    if let Some(key) = name.strip_prefix(DATA_FIELD) {
                        data.push((key, value));
                    }
                }
            }
        }
        let (Some(d), Some(l), Some(i)) = (d, l, i) else {
            return Err(not_ours());
        };
        let mut record = Record::decode(d)?;
        let (Some(l), Some(i)) = (parse_u64(l), parse_u64(i)) else {
            return Err(not_ours());
        };
        if record.id_hash != *id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the Redis key {} holds another session's record",
                    self.record_key(id)
                ),
            ));
        }
        if layout == Some(b"2".as_slice()) {
            // The data and the version live in fields of their own (`apply` writes them
            // without rewriting `d`).
            record.version = v.and_then(parse_u64).ok_or_else(not_ours)?;
            record.data.clear();
            for (key, value) in data {
                let key = std::str::from_utf8(key).map_err(|e| {
                    Error::corrupt(
                        format!(
                            "a data field of the Redis key {} is not UTF-8",
                            self.record_key(id)
                        ),
                        e,
                    )
                })?;
                record.data.insert(
                    key.to_owned(),
                    decode_value(value).map_err(|e| {
                        Error::corrupt(
                            format!(
                                "the value of {key:?} in the Redis key {} does not decode",
                                self.record_key(id)
                            ),
                            e,
                        )
                    })?,
                );
            }
        } else if layout.is_some() {
            return Err(not_ours());
        }
        // `touch` and `apply` write these two fields alone, without rewriting the record.
        record.last_seen = l;
        record.idle_deadline = i;
        Ok(record.is_live(now).then_some(record))
    }

    pub(crate) fn hgetall(&self, id: &IdHash) -> Cmd {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.record_key(id));
        cmd
    }
}

/// Decodes one data value: exactly one MessagePack value, nothing after it.
pub(super) fn decode_value(
    bytes: &[u8],
) -> Result<cloakroom::Value, Box<dyn std::error::Error + Send + Sync>> {
    let mut cursor = bytes;
    let value: cloakroom::Value = rmp_serde::decode::from_read(&mut cursor)?;
    if !cursor.is_empty() {
        return Err("trailing bytes after a value".into());
    }
    Ok(value)
}
