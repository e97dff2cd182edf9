//! Conversions between the session core's types (`cloakroom`) and the CRP1 wire types
//! (`cloakroom-proto`), written once for both ends of the protocol: the daemon `cloakroomd`
//! (wire → core on a request, core → wire on a reply) and the remote store (the other way
//! round).
//!
//! `cloakroom-proto` depends on nothing of the session core on purpose (see its crate
//! documentation), so the conversions live here, in the crate that already depends on both;
//! the arrows stay one-way: `cloakroom-proto` ← `cloakroom-stores` (feature `wire`) ←
//! `cloakroomd`.
//!
//! Every conversion is total and lossless for the fields CRP1 carries: a record turned into
//! its wire form and back is equal to the original.

use cloakroom::{Changes, Device, IdHash, Policy, Record};
use cloakroom_proto as proto;

/// A session id hash in its wire form.
pub fn id_hash_to_wire(h: &IdHash) -> proto::IdHash {
    proto::IdHash(*h.as_bytes())
}

/// A session id hash from its wire form.
pub fn id_hash_from_wire(h: &proto::IdHash) -> IdHash {
    IdHash::from_bytes(h.0)
}

/// A device description in its wire form.
pub fn device_to_wire(d: Device) -> proto::Device {
    let mut out = proto::Device::new();
    out.user_agent = d.user_agent;
    out.label = d.label;
    out.ip = d.ip;
    out
}

/// A device description from its wire form.
pub fn device_from_wire(d: proto::Device) -> Device {
    let mut out = Device::new();
    out.user_agent = d.user_agent;
    out.label = d.label;
    out.ip = d.ip;
    out
}

/// Moves the record fields that the core's and the wire's types share by name and type from
/// the record `$from` into `$to`, either way round; the id hash and the device (of other
/// types) are the caller's.
macro_rules! move_record_fields {
    ($from:ident => $to:ident) => {
        $to.user_id = $from.user_id;
        $to.user_epoch = $from.user_epoch;
        $to.created = $from.created;
        $to.last_seen = $from.last_seen;
        $to.idle_deadline = $from.idle_deadline;
        $to.absolute_deadline = $from.absolute_deadline;
        $to.version = $from.version;
        $to.data = $from.data;
    };
}

/// A stored record in its wire form (moved, nothing copied).
pub fn record_to_wire(r: Record) -> proto::Record {
    let mut out = proto::Record::new(id_hash_to_wire(&r.id_hash));
    out.device = device_to_wire(r.device);
    move_record_fields!(r => out);
    out
}

/// A stored record from its wire form. Every field comes from the wire; the policy passed
/// to [`Record::new`] only fills fields that are then overwritten.
pub fn record_from_wire(r: proto::Record) -> Record {
    let mut out = Record::new(id_hash_from_wire(&r.id_hash), r.created, &Policy::default());
    out.device = device_from_wire(r.device);
    move_record_fields!(r => out);
    out
}

/// Per-key changes in their wire form, in order (a later change of a key wins).
pub fn changes_to_wire(changes: &Changes) -> Vec<proto::Change> {
    changes
        .iter()
        .map(|(key, value)| match value {
            Some(v) => proto::Change::Set(key.to_owned(), v.clone()),
            None => proto::Change::Remove(key.to_owned()),
        })
        .collect()
}

/// Per-key changes from their wire form, in order, as a store takes them.
pub fn changes_from_wire(changes: Vec<proto::Change>) -> Changes {
    let mut out = Changes::new();
    for c in changes {
        match c {
            proto::Change::Set(k, v) => out.set(k, v),
            proto::Change::Remove(k) => out.remove(k),
            // A later protocol revision's change kind: the decoder refuses it before a
            // request gets this far.
            _ => &mut out,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_round_trip() {
        let mut r = Record::new(IdHash::from_bytes([7; 32]), 1_000, &Policy::default());
        r.user_id = Some("ada".into());
        r.user_epoch = 3;
        r.last_seen = 1_010;
        r.idle_deadline = 2_000;
        r.absolute_deadline = 9_000;
        r.version = 5;
        r.data.insert("theme".into(), proto::Value::from("dark"));
        r.device.user_agent = Some("curl".into());
        r.device.label = Some("laptop".into());
        r.device.ip = Some("127.0.0.1".into());
        let back = record_from_wire(record_to_wire(r.clone()));
        assert_eq!(back, r);
    }

    #[test]
    fn changes_keep_their_order() {
        let mut c = Changes::new();
        c.set("a", proto::Value::from(1));
        c.remove("b");
        c.set("a", proto::Value::from(2));
        assert!(changes_from_wire(changes_to_wire(&c)) == c);
    }
}
