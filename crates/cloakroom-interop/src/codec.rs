//! Byte-level helpers shared by the formats: base64 flavours, zlib, percent-decoding and JSON
//! written the way Python's `json.dumps` and Ruby's `ActiveSupport::JSON.encode` write it.

use std::io::{self, Read, Write};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The longest cookie value `open` looks at, in bytes. Browsers keep 4096 bytes per cookie;
/// anything much longer was not made by a framework and is refused as invalid before any
/// crypto runs.
pub const MAX_COOKIE_LEN: usize = 16 * 1024;

/// The most bytes an authentic compressed payload may inflate to. A cookie holds at most a
/// few kilobytes, so a larger result means a zlib bomb (which only a holder of the secret can
/// make, since inflating happens after the MAC verifies).
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;

/// URL-safe base64 without padding, strict: canonical trailing bits, no padding accepted.
pub(crate) fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

pub(crate) fn b64url_encode(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Standard base64 with padding, strict (Ruby's `Base64.strict_decode64`).
pub(crate) fn b64_decode(s: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

pub(crate) fn b64_encode(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// zlib-inflates an authentic payload, refusing more than [`MAX_PAYLOAD_LEN`] bytes.
pub(crate) fn inflate(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::ZlibDecoder::new(data).take(MAX_PAYLOAD_LEN as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        Error::with_source(
            ErrorKind::Unsupported,
            "the payload is marked compressed but is not zlib data",
            e,
        )
    })?;
    if out.len() > MAX_PAYLOAD_LEN {
        return Err(Error::new(
            ErrorKind::TooLarge,
            "the compressed payload inflates past MAX_PAYLOAD_LEN",
        ));
    }
    Ok(out)
}

/// Undoes Rack's escaping of a Rails cookie value: `%2B`, `%2F` and `%3D` (the only escapes
/// Rack writes for base64 and `-`) become `+`, `/` and `=`. Any other `%` makes the value
/// invalid, so apart from escaping those three or not, a value has one spelling only.
pub(crate) fn rack_unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Some(b.to_vec());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(match b.get(i + 1..i + 3)? {
                b"2B" => b'+',
                b"2F" => b'/',
                b"3D" => b'=',
                _ => return None,
            });
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Parses an authentic payload as JSON. Pickle and Marshal payloads are recognised by their
/// first bytes and refused with the reason; anything else that is not JSON is refused too.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => Err(match bytes {
            [0x80, 1..=5, ..] => Error::with_source(ErrorKind::Unsupported, PICKLE_REFUSED, e),
            [0x04, 0x08, ..] => Error::with_source(ErrorKind::Unsupported, MARSHAL_REFUSED, e),
            _ => Error::with_source(
                ErrorKind::Unsupported,
                "the cookie is authentic but its payload is not JSON; only JSON serializers are supported",
                e,
            ),
        }),
    }
}

/// Why pickle payloads are refused.
pub(crate) const PICKLE_REFUSED: &str =
    "the cookie is authentic but was written by Python's pickle serializer; \
     it is refused because loading pickle runs code chosen by whoever wrote the cookie \
     (configure the app with its JSON serializer)";

/// Why Ruby Marshal payloads are refused.
pub(crate) const MARSHAL_REFUSED: &str =
    "the cookie is authentic but was written by Ruby's Marshal serializer; \
     it is refused because Marshal.load can instantiate arbitrary objects and run code \
     (set config.action_dispatch.cookies_serializer = :json)";

/// How a framework's JSON encoder writes text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonStyle {
    /// Between array items and object members: `","` or Python's default `", "`.
    pub(crate) item_sep: &'static str,
    /// Between a key and its value: `":"` or Python's default `": "`.
    pub(crate) key_sep: &'static str,
    /// Python's `ensure_ascii=True`: every non-ASCII character and DEL as `\uXXXX`.
    pub(crate) ensure_ascii: bool,
    /// ActiveSupport's `escape_html_entities_in_json`: `<`, `>`, `&`, U+2028, U+2029 escaped.
    pub(crate) escape_html: bool,
    /// Python's `sort_keys=True`, at every depth.
    pub(crate) sort_keys: bool,
}

impl JsonStyle {
    /// `json.dumps(obj, separators=(",", ":"))`: Django, and Flask with `sort_keys`.
    pub(crate) const PYTHON_COMPACT: Self = Self {
        item_sep: ",",
        key_sep: ":",
        ensure_ascii: true,
        escape_html: false,
        sort_keys: false,
    };
    /// `json.dumps(obj)`: webob's JSONSerializer (Pyramid).
    pub(crate) const PYTHON_DEFAULT: Self = Self {
        item_sep: ", ",
        key_sep: ": ",
        ensure_ascii: true,
        escape_html: false,
        sort_keys: false,
    };
    /// `ActiveSupport::JSON.encode`.
    pub(crate) const ACTIVE_SUPPORT: Self = Self {
        item_sep: ",",
        key_sep: ":",
        ensure_ascii: false,
        escape_html: true,
        sort_keys: false,
    };
}

/// Serializes `value` in `style`. Object keys keep the order `value` gives them (a struct's
/// field order, a map's iteration order) unless the style sorts them.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, style: JsonStyle) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let fmt = StyleFormatter(style);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let res = if style.sort_keys {
        let v = serde_json::to_value(value).map_err(not_json)?;
        Sorted(&v).serialize(&mut ser)
    } else {
        value.serialize(&mut ser)
    };
    res.map_err(not_json)?;
    Ok(out)
}

fn not_json(e: serde_json::Error) -> Error {
    Error::with_source(
        ErrorKind::InvalidInput,
        "the session does not serialize to JSON",
        e,
    )
}

/// A JSON value serialized with its object keys sorted, whatever map type serde_json uses.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Sorted(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, &Sorted(v))?;
                }
                m.end()
            }
            other => other.serialize(s),
        }
    }
}

struct StyleFormatter(JsonStyle);

impl serde_json::ser::Formatter for StyleFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(self.0.item_sep.as_bytes())
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(self.0.item_sep.as_bytes())
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(self.0.key_sep.as_bytes())
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let style = self.0;
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '\u{7f}' | '\u{80}'.. if style.ensure_ascii => true,
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.escape_html => true,
                _ => false,
            };
            if !escape {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_styles() {
        let v = json!({"b": [1, "é😀\u{7f}"], "a": null});
        let compact = String::from_utf8(to_json(&v, JsonStyle::PYTHON_COMPACT).unwrap()).unwrap();
        assert!(
            compact.contains("\"\\u00e9\\ud83d\\ude00\\u007f\""),
            "{compact}"
        );
        let sorted = JsonStyle {
            sort_keys: true,
            ..JsonStyle::PYTHON_COMPACT
        };
        let s = String::from_utf8(to_json(&v, sorted).unwrap()).unwrap();
        assert_eq!(s, r#"{"a":null,"b":[1,"\u00e9\ud83d\ude00\u007f"]}"#);
        let d =
            String::from_utf8(to_json(&json!([1, {"k": 2}]), JsonStyle::PYTHON_DEFAULT).unwrap())
                .unwrap();
        assert_eq!(d, r#"[1, {"k": 2}]"#);
    }

    #[test]
    fn active_support_style() {
        let s = to_json(&json!(["<a>&\u{2028}é"]), JsonStyle::ACTIVE_SUPPORT).unwrap();
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "[\"\\u003ca\\u003e\\u0026\\u2028é\"]"
        );
    }

    #[test]
    fn refusals_name_the_serializer() {
        let e = parse_json(b"\x80\x04\x95stuff").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("pickle"));
        let e = parse_json(b"\x04\x08{\x06").unwrap_err();
        assert!(e.to_string().contains("Marshal"));
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn rack_escapes() {
        assert_eq!(rack_unescape("a%2Bb%3D+%2F").unwrap(), b"a+b=+/");
        assert_eq!(rack_unescape("plain").unwrap(), b"plain");
        for bad in ["a%2b", "a%2", "a%", "a%41", "a%zz"] {
            assert!(rack_unescape(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn inflate_limits() {
        use flate2::{write::ZlibEncoder, Compression};
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&vec![b'a'; MAX_PAYLOAD_LEN + 1]).unwrap();
        let bomb = enc.finish().unwrap();
        assert_eq!(inflate(&bomb).unwrap_err().kind(), ErrorKind::TooLarge);
        assert_eq!(
            inflate(b"not zlib").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
}
