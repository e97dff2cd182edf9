//! The stored record of a session and its one MessagePack encoding.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::IdHash;
use crate::policy::Policy;
use crate::store::{Error, ErrorKind};

/// An application value in the session: any MessagePack value.
pub type Value = rmpv::Value;

/// The first byte of every encoded record: the record format's version.
pub const RECORD_FORMAT: u8 = 1;

/// What the application tells us about the device a session was opened on, for a "your
/// devices" page. Stored as given; Cloakroom never parses or trusts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Device {
    /// The `User-Agent` header, as the application passed it.
    pub user_agent: Option<String>,
    /// A label the application or the user chose ("Work laptop").
    pub label: Option<String>,
    /// The client address, as the application determined it (behind a proxy, only the
    /// application knows which header to trust).
    pub ip: Option<String>,
}

impl Device {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the label.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }
}

/// One session as a store keeps it (docs/architecture.md).
///
/// Times are unix seconds. A record is live while `now` is before both deadlines; a store
/// treats a record that is not live as absent. `version` starts at 1 and grows by one on
/// every successful [`Store::update`](crate::Store::update).
///
/// `Debug` shows the id hash prefix and the data's keys, never the values (the CSRF secret
/// lives there).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// SHA-256 of the session id.
    pub id_hash: IdHash,
    /// The logged-in user, if any.
    pub user_id: Option<String>,
    /// The user's epoch when they logged in; a session of an older epoch is dead.
    pub user_epoch: u64,
    /// When the session was created (or last logged in: login makes a new session).
    pub created: u64,
    /// When the session was last written or touched.
    pub last_seen: u64,
    /// The session dies at this time unless touched.
    pub idle_deadline: u64,
    /// The session dies at this time whatever happens.
    pub absolute_deadline: u64,
    /// Compare-and-swap version, 1 for a new record.
    pub version: u64,
    /// The application's data: keys to MessagePack values.
    pub data: BTreeMap<String, Value>,
    /// Device metadata.
    pub device: Device,
}

impl Record {
    /// A new anonymous record at version 1 with the deadlines of `policy`.
    pub fn new(id_hash: IdHash, now: u64, policy: &Policy) -> Self {
        let absolute_deadline = now.saturating_add(policy.absolute().as_secs());
        Self {
            id_hash,
            user_id: None,
            user_epoch: 0,
            created: now,
            last_seen: now,
            idle_deadline: now
                .saturating_add(policy.idle().as_secs())
                .min(absolute_deadline),
            absolute_deadline,
            version: 1,
            data: BTreeMap::new(),
            device: Device::default(),
        }
    }

    /// Whether the record is live at `now` (before both deadlines).
    pub fn is_live(&self, now: u64) -> bool {
        now < self.idle_deadline && now < self.absolute_deadline
    }

    /// When the record dies if nothing touches it: the earlier deadline.
    pub fn expires_at(&self) -> u64 {
        self.idle_deadline.min(self.absolute_deadline)
    }

    /// Encodes the record for a store: [`RECORD_FORMAT`] then MessagePack with named
    /// fields. Every byte-oriented store (file, SQLite, Redis, ...) uses this encoding.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if the encoder fails (it does not for records built by this
    /// crate).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let wire = Wire {
            id_hash: self.id_hash,
            user_id: self.user_id.as_deref().map(Cow::Borrowed),
            user_epoch: self.user_epoch,
            created: self.created,
            last_seen: self.last_seen,
            idle_deadline: self.idle_deadline,
            absolute_deadline: self.absolute_deadline,
            version: self.version,
            data: Cow::Borrowed(&self.data),
            device: Cow::Borrowed(&self.device),
        };
        let mut out = vec![RECORD_FORMAT];
        rmp_serde::encode::write_named(&mut out, &wire).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "encoding a record failed").with_source(e)
        })?;
        Ok(out)
    }

    /// Decodes bytes written by [`Record::encode`].
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] for anything else: a wrong format byte, bad MessagePack,
    /// missing fields, trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let Some((&format, body)) = bytes.split_first() else {
            return Err(Error::new(ErrorKind::Corrupt, "empty record"));
        };
        if format != RECORD_FORMAT {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("unknown record format {format}"),
            ));
        }
        let mut cursor = body;
        let wire: Wire<'static> = rmp_serde::decode::from_read(&mut cursor)
            .map_err(|e| Error::corrupt("record does not decode", e))?;
        if !cursor.is_empty() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "trailing bytes after record",
            ));
        }
        Ok(Self {
            id_hash: wire.id_hash,
            user_id: wire.user_id.map(Cow::into_owned),
            user_epoch: wire.user_epoch,
            created: wire.created,
            last_seen: wire.last_seen,
            idle_deadline: wire.idle_deadline,
            absolute_deadline: wire.absolute_deadline,
            version: wire.version,
            data: wire.data.into_owned(),
            device: wire.device.into_owned(),
        })
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id_hash,
            user_id,
            user_epoch,
            created,
            last_seen,
            idle_deadline,
            absolute_deadline,
            version,
            data,
            device,
        } = self;
        f.debug_struct("Record")
            .field("id_hash", id_hash)
            .field("user_id", user_id)
            .field("user_epoch", user_epoch)
            .field("created", created)
            .field("last_seen", last_seen)
            .field("idle_deadline", idle_deadline)
            .field("absolute_deadline", absolute_deadline)
            .field("version", version)
            .field("data_keys", &data.keys().collect::<Vec<_>>())
            .field("device", device)
            .finish()
    }
}

/// A record as its MessagePack map holds it: borrowing the record's fields to encode, owning
/// them once decoded.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    id_hash: IdHash,
    user_id: Option<Cow<'a, str>>,
    user_epoch: u64,
    created: u64,
    last_seen: u64,
    idle_deadline: u64,
    absolute_deadline: u64,
    version: u64,
    data: Cow<'a, BTreeMap<String, Value>>,
    device: Cow<'a, Device>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    fn sample() -> Record {
        let mut r = Record::new(
            SessionId::generate().unwrap().hash(),
            1000,
            &Policy::default(),
        );
        r.user_id = Some("ünïcødé".into());
        r.data.insert("n".into(), Value::from(7));
        r.data.insert("b".into(), Value::Binary(vec![0, 1, 2]));
        r.device = Device::new().with_user_agent("UA").with_ip("192.0.2.1");
        r
    }

    #[test]
    fn record_round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode().unwrap()).unwrap(), r);
        assert_eq!(r.idle_deadline, 1000 + 1800);
        assert_eq!(r.absolute_deadline, 1000 + 12 * 3600);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let good = sample().encode().unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![9],
            vec![1],
            vec![1, 0xc1],
            b"\x01hello".to_vec(),
        ];
        for cut in 0..good.len() {
            cases.push(good[..cut].to_vec());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        for bytes in cases {
            let err = Record::decode(&bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{bytes:?}");
        }
    }

    #[test]
    fn debug_hides_values() {
        let mut r = sample();
        r.data.insert("secret".into(), Value::from("hunter2"));
        let shown = format!("{r:?}");
        assert!(shown.contains("secret"));
        assert!(!shown.contains("hunter2"));
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded_with(value: &[u8]) -> Vec<u8> {
        // A record whose only data value is replaced by the raw MessagePack in `value`.
        let mut r = Record::new(IdHash::from_bytes([7; 32]), 1, &Policy::default());
        r.data.insert("k".into(), Value::from("PLACEHOLDER"));
        let good = r.encode().unwrap();
        let marker = rmp_serde::to_vec(&"PLACEHOLDER").unwrap();
        let at = good
            .windows(marker.len())
            .position(|w| w == marker.as_slice())
            .unwrap();
        let mut out = good[..at].to_vec();
        out.extend_from_slice(value);
        out.extend_from_slice(&good[at + marker.len()..]);
        out
    }

    #[test]
    fn huge_length_prefixes_are_corrupt_not_an_allocation() {
        for value in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..], // array32 of 4 G elements
            &[0xdf, 0xff, 0xff, 0xff, 0xff][..], // map32 of 4 G entries
            &[0xc6, 0xff, 0xff, 0xff, 0xff][..], // bin32 of 4 GiB
            &[0xdb, 0xff, 0xff, 0xff, 0xff][..], // str32 of 4 GiB
        ] {
            let bytes = encoded_with(value);
            assert_eq!(
                Record::decode(&bytes).unwrap_err().kind(),
                ErrorKind::Corrupt
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::decode(&bytes);
            let mut framed = vec![RECORD_FORMAT];
            framed.extend_from_slice(&bytes);
            let _ = Record::decode(&framed);
        }

        #[test]
        fn mutated_records_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut r = Record::new(IdHash::from_bytes([1; 32]), 5, &Policy::default());
            r.user_id = Some("u".into());
            r.data.insert("a".into(), Value::Array(vec![Value::from(1), Value::Binary(vec![2; 8])]));
            let mut bytes = r.encode().unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(back) = Record::decode(&bytes) {
                // Whatever decodes re-encodes to a record that decodes the same.
                prop_assert_eq!(Record::decode(&back.encode().unwrap()).unwrap(), back);
            }
        }
    }
}
