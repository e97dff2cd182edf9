//! The metadata envelope both jars write and read (`_rails`: data or message, `exp`,
//! `pur`), its ISO 8601 times, and Rack's escaping.

use serde::Serialize;
use serde_json::Value;

use super::RailsEnvelope;
use crate::codec::{self, JsonStyle};
use crate::error::{Error, ErrorKind, Result};

/// Takes the data and the expiry (unix milliseconds) out of a plaintext's metadata envelope,
/// checking its purpose as `Messages::Metadata` does.
pub(super) fn unwrap_envelope(value: Value, purpose: &str) -> Result<(Value, Option<u64>)> {
    let Value::Object(mut outer) = value else {
        return Ok((value, None));
    };
    let mut meta = match outer.remove("_rails") {
        None => return Ok((Value::Object(outer), None)),
        Some(Value::Object(meta)) => meta,
        Some(_) => return Err(Error::invalid()),
    };
    match meta.get("pur") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p == purpose => {}
        Some(_) => return Err(Error::invalid()),
    }
    let exp = match meta.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_iso8601_ms(s).ok_or_else(Error::invalid)?),
        Some(_) => return Err(Error::invalid()),
    };
    let data = if let Some(message) = meta.get("message") {
        let Value::String(b64) = message else {
            return Err(Error::invalid());
        };
        let inner = codec::b64_decode(b64.as_bytes()).ok_or_else(Error::invalid)?;
        codec::parse_json(&inner)?
    } else if let Some(data) = meta.remove("data") {
        data
    } else {
        return Err(Error::invalid());
    };
    Ok((data, exp))
}

/// Rails' `fresh?`: refused from the `exp` millisecond on. Gives `expires_at` in seconds.
pub(super) fn check_exp(exp_ms: Option<u64>, now: u64) -> Result<Option<u64>> {
    match exp_ms {
        None => Ok(None),
        Some(ms) => {
            if now.checked_mul(1000).is_none_or(|now_ms| now_ms >= ms) {
                return Err(Error::expired());
            }
            Ok(Some(ms.div_ceil(1000)))
        }
    }
}

/// The plaintext Rails encrypts or signs: `value` in a metadata envelope.
pub(super) fn envelope_json<T: Serialize + ?Sized>(
    value: &T,
    expires_at: Option<u64>,
    purpose: &str,
    envelope: RailsEnvelope,
) -> Result<Vec<u8>> {
    let exp = expires_at.map(format_iso8601).transpose()?;
    Ok(match envelope {
        RailsEnvelope::Message => {
            #[derive(Serialize)]
            struct Meta<'a> {
                message: String,
                exp: Option<String>,
                pur: &'a str,
            }
            let message = codec::b64_encode(&codec::to_json(value, JsonStyle::ACTIVE_SUPPORT)?);
            let meta = Meta {
                message,
                exp,
                pur: purpose,
            };
            codec::to_json(&Envelope { _rails: meta }, JsonStyle::ACTIVE_SUPPORT)?
        }
        RailsEnvelope::Data => {
            #[derive(Serialize)]
            struct Meta<'a, T: ?Sized> {
                data: &'a T,
                #[serde(skip_serializing_if = "Option::is_none")]
                exp: Option<String>,
                pur: &'a str,
            }
            let meta = Meta {
                data: value,
                exp,
                pur: purpose,
            };
            codec::to_json(&Envelope { _rails: meta }, JsonStyle::ACTIVE_SUPPORT)?
        }
    })
}

#[derive(Serialize)]
struct Envelope<M> {
    _rails: M,
}

/// Rack's `escape` for the characters a Rails cookie holds: base64 and `-`.
pub(super) fn rack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// `Time#iso8601(3)` in UTC: `2023-11-14T23:13:20.000Z`.
pub(super) fn format_iso8601(secs: u64) -> Result<String> {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if secs > MAX {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "expires_at is past year 9999",
        ));
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Ok(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Parses what `Time.iso8601` accepts from Rails: `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`,
/// to unix milliseconds. Times before 1970 give `None`.
pub(super) fn parse_iso8601_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &b[start..i.min(start + 3)];
        ms = frac
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0, |acc, &c| acc * 10 + i64::from(c - b'0'));
    }
    let offset_secs = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs.checked_mul(1000)?.checked_add(ms)?).ok()
}

// Howard Hinnant's civil-from-days algorithms.
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
