//! A bounded MessagePack reader into [`rmpv::Value`], and the one writer.
//!
//! Written here rather than taken from `rmpv::decode` so that every limit is checked before
//! anything is allocated: a length prefix is compared with the bytes that are actually left
//! (an array of `n` values needs at least `n` bytes, a map at least `2n`), nesting is capped,
//! and so is the total number of values in one body. It reads from a slice and never panics.

use rmpv::Value;

/// Why a MessagePack body did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// The input ends inside a value, or a length prefix claims more bytes than are left.
    Truncated,
    /// The reserved byte 0xc1.
    Reserved,
    /// A string is not UTF-8.
    Utf8,
    /// Nested deeper than the limit.
    TooDeep(usize),
    /// More values than the limit.
    TooManyValues(usize),
    /// Bytes after the one top-level value.
    Trailing,
}

impl Malformed {
    /// Whether the failure is a limit (answered `TOO_LARGE`) rather than bad input.
    pub(crate) fn is_limit(&self) -> bool {
        matches!(self, Self::TooDeep(_) | Self::TooManyValues(_))
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Truncated => "MessagePack is truncated or a length exceeds the body".into(),
            Self::Reserved => "MessagePack uses the reserved byte 0xc1".into(),
            Self::Utf8 => "a MessagePack string is not UTF-8".into(),
            Self::TooDeep(max) => format!("MessagePack nests deeper than {max} levels"),
            Self::TooManyValues(max) => format!("MessagePack holds more than {max} values"),
            Self::Trailing => "bytes after the MessagePack body".into(),
        }
    }
}

/// Decodes exactly one value from `bytes`, within `max_depth` and `max_values`.
pub(crate) fn decode(
    bytes: &[u8],
    max_depth: usize,
    max_values: usize,
) -> Result<Value, Malformed> {
    let mut reader = Reader {
        rest: bytes,
        values_left: max_values,
        max_values,
        max_depth,
    };
    let value = reader.value(0)?;
    if reader.rest.is_empty() {
        Ok(value)
    } else {
        Err(Malformed::Trailing)
    }
}

/// Encodes one value. Writing to a `Vec` cannot fail, and every value this crate builds
/// has fewer than 2^32 entries per container, so the only error `rmpv` reports cannot happen.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if rmpv::encode::write_value(&mut out, value).is_err() {
        // Unreachable for a Vec writer; an empty map keeps the frame well-formed regardless.
        out.clear();
        out.push(0x80);
    }
    out
}

struct Reader<'a> {
    rest: &'a [u8],
    values_left: usize,
    max_values: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    fn len8(&mut self) -> Result<usize, Malformed> {
        Ok(usize::from(self.u8()?))
    }

    fn len16(&mut self) -> Result<usize, Malformed> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, Malformed> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| Malformed::Truncated)
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in what is left.
    fn fits(&self, count: usize, min_bytes: usize) -> Result<(), Malformed> {
        match count.checked_mul(min_bytes) {
            Some(need) if need <= self.rest.len() => Ok(()),
            _ => Err(Malformed::Truncated),
        }
    }

    fn string(&mut self, len: usize) -> Result<Value, Malformed> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| Malformed::Utf8)?;
        Ok(Value::from(text))
    }

    fn ext(&mut self, len: usize) -> Result<Value, Malformed> {
        let [ty] = self.array::<1>()?;
        let data = self.take(len)?;
        Ok(Value::Ext(i8::from_be_bytes([ty]), data.to_vec()))
    }

    fn seq(&mut self, len: usize, depth: usize) -> Result<Value, Malformed> {
        self.fits(len, 1)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, Malformed> {
        self.fits(len, 2)?;
        let mut entries = Vec::with_capacity(len);
        for _ in 0..len {
            let key = self.value(depth + 1)?;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }

    fn value(&mut self, depth: usize) -> Result<Value, Malformed> {
        // The body map is level 1 (depth 0): nothing sits deeper than level `max_depth`.
        if depth >= self.max_depth {
            return Err(Malformed::TooDeep(self.max_depth));
        }
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or(Malformed::TooManyValues(self.max_values))?;
        let marker = self.u8()?;
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            0x80..=0x8f => return self.map(usize::from(marker & 0x0f), depth),
            0x90..=0x9f => return self.seq(usize::from(marker & 0x0f), depth),
            0xa0..=0xbf => return self.string(usize::from(marker & 0x1f)),
            0xc0 => Value::Nil,
            0xc1 => return Err(Malformed::Reserved),
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xc4 => {
                let len = self.len8()?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc5 => {
                let len = self.len16()?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc6 => {
                let len = self.len32()?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc7 => {
                let len = self.len8()?;
                return self.ext(len);
            }
            0xc8 => {
                let len = self.len16()?;
                return self.ext(len);
            }
            0xc9 => {
                let len = self.len32()?;
                return self.ext(len);
            }
            0xca => Value::F32(f32::from_be_bytes(self.array()?)),
            0xcb => Value::F64(f64::from_be_bytes(self.array()?)),
            0xcc => Value::from(self.u8()?),
            0xcd => Value::from(u16::from_be_bytes(self.array()?)),
            0xce => Value::from(u32::from_be_bytes(self.array()?)),
            0xcf => Value::from(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::from(i8::from_be_bytes(self.array()?)),
            0xd1 => Value::from(i16::from_be_bytes(self.array()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.array()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.array()?)),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xd9 => {
                let len = self.len8()?;
                return self.string(len);
            }
            0xda => {
                let len = self.len16()?;
                return self.string(len);
            }
            0xdb => {
                let len = self.len32()?;
                return self.string(len);
            }
            0xdc => {
                let len = self.len16()?;
                return self.seq(len, depth);
            }
            0xdd => {
                let len = self.len32()?;
                return self.seq(len, depth);
            }
            0xde => {
                let len = self.len16()?;
                return self.map(len, depth);
            }
            0xdf => {
                let len = self.len32()?;
                return self.map(len, depth);
            }
            0xe0..=0xff => Value::from(i8::from_be_bytes([marker])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<Value, Malformed> {
        decode(bytes, 32, 1000)
    }

    #[test]
    fn agrees_with_rmpv_on_every_kind_of_value() {
        let value = Value::Map(vec![
            (Value::from("nil"), Value::Nil),
            (Value::from("t"), Value::Boolean(true)),
            (
                Value::from("ints"),
                Value::Array(
                    [
                        0i64, 1, 127, 128, 255, 256, 65_535, 65_536, -1, -32, -33, -128, -129,
                    ]
                    .into_iter()
                    .map(Value::from)
                    .chain([Value::from(u64::MAX), Value::from(i64::MIN)])
                    .collect(),
                ),
            ),
            (Value::from("f32"), Value::F32(1.5)),
            (Value::from("f64"), Value::F64(-2.25)),
            (Value::from("s"), Value::from("x".repeat(300).as_str())),
            (Value::from("b"), Value::Binary(vec![7; 70_000])),
            (Value::from("e"), Value::Ext(-3, vec![1, 2, 3, 4])),
            (Value::from("e1"), Value::Ext(5, vec![9])),
            (Value::from("e3"), Value::Ext(5, vec![9, 9, 9])),
            (
                Value::from("a16"),
                Value::Array((0..20).map(Value::from).collect()),
            ),
        ]);
        let bytes = encode(&value);
        assert_eq!(decode(&bytes, 32, 100_000).unwrap(), value);
        let mut cursor = bytes.as_slice();
        assert_eq!(rmpv::decode::read_value(&mut cursor).unwrap(), value);
    }

    #[test]
    fn non_minimal_encodings_are_accepted() {
        assert_eq!(dec(&[0xcc, 5]).unwrap(), Value::from(5));
        assert_eq!(dec(&[0xd0, 5]).unwrap(), Value::from(5));
        assert_eq!(dec(&[0xde, 0, 0]).unwrap(), Value::Map(vec![]));
        assert_eq!(dec(&[0xd9, 1, b'a']).unwrap(), Value::from("a"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(dec(&[]), Err(Malformed::Truncated));
        assert_eq!(dec(&[0xc1]), Err(Malformed::Reserved));
        assert_eq!(dec(&[0xa1, 0xff]), Err(Malformed::Utf8));
        assert_eq!(dec(&[0x80, 0x80]), Err(Malformed::Trailing));
        assert_eq!(dec(&[0x81, 0xa1, b'a']), Err(Malformed::Truncated));
        assert_eq!(dec(&[0xcf, 0, 0]), Err(Malformed::Truncated));
    }

    #[test]
    fn huge_length_prefixes_fail_before_allocating() {
        for bytes in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdf, 0xff, 0xff, 0xff, 0xff][..],
            &[0xc6, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdb, 0xff, 0xff, 0xff, 0xff][..],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 1][..],
        ] {
            assert_eq!(dec(bytes), Err(Malformed::Truncated), "{bytes:02x?}");
        }
    }

    #[test]
    fn the_depth_limit_counts_the_top_level_as_level_one() {
        assert!(decode(&[0x91, 0x91, 0x01], 3, 100).is_ok());
        assert_eq!(
            decode(&[0x91, 0x91, 0x91, 0x01], 3, 100),
            Err(Malformed::TooDeep(3))
        );
    }

    #[test]
    fn depth_and_count_are_capped() {
        let deep = [0x91; 40];
        assert_eq!(dec(&deep), Err(Malformed::TooDeep(32)));
        let mut many = vec![0xdc, 0x07, 0xd0];
        many.extend(std::iter::repeat_n(0, 2000));
        assert_eq!(dec(&many), Err(Malformed::TooManyValues(1000)));
    }
}
