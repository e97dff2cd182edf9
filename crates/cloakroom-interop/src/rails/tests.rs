//! Unit tests of the Rails jars' helpers.

use super::envelope::{format_iso8601, parse_iso8601_ms, rack_escape};
use super::*;
use serde_json::json;

#[test]
fn iso8601() {
    assert_eq!(
        format_iso8601(1_700_003_600).unwrap(),
        "2023-11-14T23:13:20.000Z"
    );
    assert_eq!(format_iso8601(0).unwrap(), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        parse_iso8601_ms("2023-11-14T23:13:20.000Z"),
        Some(1_700_003_600_000)
    );
    assert_eq!(
        parse_iso8601_ms("2023-11-14T23:13:20Z"),
        Some(1_700_003_600_000)
    );
    assert_eq!(
        parse_iso8601_ms("2023-11-14T23:13:20.5Z"),
        Some(1_700_003_600_500)
    );
    assert_eq!(
        parse_iso8601_ms("2023-11-15T00:13:20+01:00"),
        Some(1_700_003_600_000)
    );
    assert_eq!(parse_iso8601_ms("1969-12-31T23:59:59Z"), None);
    assert_eq!(parse_iso8601_ms("2023-11-14 23:13:20Z"), None);
    for s in [0u64, 951_782_400, 1_700_003_600, 253_402_300_799] {
        let t = format_iso8601(s).unwrap();
        assert_eq!(parse_iso8601_ms(&t), Some(s * 1000), "{t}");
    }
    assert!(format_iso8601(253_402_300_800).is_err());
}

#[test]
fn expiry_and_purpose() {
    let r = Rails::new(RailsVersion::V6_1, Secret::from("s"), "_a_session").unwrap();
    for env in [RailsEnvelope::Message, RailsEnvelope::Data] {
        let r = r.clone().with_envelope(env);
        let c = r.write(&json!({"u": 1}), Some(1000)).unwrap();
        let s = r.open(&c, 999).unwrap();
        assert_eq!((s.data, s.expires_at), (json!({"u": 1}), Some(1000)));
        assert_eq!(r.open(&c, 1000).unwrap_err().kind(), ErrorKind::Expired);
        let other = Rails::new(RailsVersion::V6_1, Secret::from("s"), "_b_session").unwrap();
        assert_eq!(other.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
        let v72 = Rails::new(RailsVersion::V7_2, Secret::from("s"), "_a_session").unwrap();
        assert_eq!(v72.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
    }
}

#[test]
fn escaping() {
    assert_eq!(rack_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
}
