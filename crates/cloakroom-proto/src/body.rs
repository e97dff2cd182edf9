//! Bodies: one MessagePack map, read field by field into typed values and written in the
//! documented field order.

use std::collections::BTreeMap;

use rmpv::Value;

use crate::error::{DecodeError, ErrorKind};
use crate::msgpack;
use crate::types::{Change, Data, Device, Flash, IdHash, Limits, Record, Secret};

fn malformed(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(ErrorKind::Malformed, detail)
}

fn wrong(field: &str, expected: &str) -> DecodeError {
    malformed(format!("field `{field}`: expected {expected}"))
}

/// Decodes a body frame into its fields, enforcing `limits` first.
pub(crate) fn read(bytes: &[u8], limits: &Limits) -> Result<Fields, DecodeError> {
    if bytes.len() > limits.max_body {
        return Err(DecodeError::new(
            ErrorKind::TooLarge,
            format!(
                "body of {} bytes exceeds the limit of {} bytes",
                bytes.len(),
                limits.max_body
            ),
        ));
    }
    let value = msgpack::decode(bytes, limits.max_depth, limits.max_values).map_err(|e| {
        let kind = if e.is_limit() {
            ErrorKind::TooLarge
        } else {
            ErrorKind::Malformed
        };
        DecodeError::new(kind, format!("body: {}", e.describe()))
    })?;
    let Value::Map(entries) = value else {
        return Err(malformed("body: expected a MessagePack map"));
    };
    Fields::from_entries("body", entries)
}

/// The fields of one map, taken out one by one. Keys not taken are ignored (a later
/// protocol revision may add optional fields).
#[derive(Debug)]
pub(crate) struct Fields {
    fields: BTreeMap<String, Value>,
}

impl Fields {
    fn from_entries(what: &str, entries: Vec<(Value, Value)>) -> Result<Self, DecodeError> {
        let mut fields = BTreeMap::new();
        for (key, value) in entries {
            let Value::String(key) = key else {
                return Err(malformed(format!("{what}: a map key is not a string")));
            };
            let Some(key) = key.into_str() else {
                return Err(malformed(format!("{what}: a map key is not UTF-8")));
            };
            if fields.contains_key(&key) {
                return Err(malformed(format!("{what}: duplicate key `{key}`")));
            }
            fields.insert(key, value);
        }
        Ok(Self { fields })
    }

    /// The field, with nil counted as absent.
    fn take(&mut self, name: &str) -> Option<Value> {
        match self.fields.remove(name) {
            None | Some(Value::Nil) => None,
            Some(value) => Some(value),
        }
    }

    fn need(&mut self, name: &str) -> Result<Value, DecodeError> {
        self.take(name)
            .ok_or_else(|| malformed(format!("field `{name}` is missing")))
    }

    pub(crate) fn u64(&mut self, name: &str) -> Result<u64, DecodeError> {
        as_u64(name, self.need(name)?)
    }

    pub(crate) fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, DecodeError> {
        self.take(name).map(|v| as_u64(name, v)).transpose()
    }

    pub(crate) fn bool(&mut self, name: &str) -> Result<bool, DecodeError> {
        match self.need(name)? {
            Value::Boolean(b) => Ok(b),
            _ => Err(wrong(name, "a boolean")),
        }
    }

    pub(crate) fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, DecodeError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(_) => Err(wrong(name, "a boolean")),
        }
    }

    pub(crate) fn string(&mut self, name: &str) -> Result<String, DecodeError> {
        as_string(name, self.need(name)?)
    }

    pub(crate) fn opt_string(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        self.take(name).map(|v| as_string(name, v)).transpose()
    }

    pub(crate) fn secret(&mut self, name: &str) -> Result<Secret, DecodeError> {
        self.string(name).map(Secret::from)
    }

    pub(crate) fn opt_secret(&mut self, name: &str) -> Result<Option<Secret>, DecodeError> {
        Ok(self.opt_string(name)?.map(Secret::from))
    }

    pub(crate) fn id_hash(&mut self, name: &str) -> Result<IdHash, DecodeError> {
        as_id_hash(name, self.need(name)?)
    }

    pub(crate) fn opt_id_hash(&mut self, name: &str) -> Result<Option<IdHash>, DecodeError> {
        self.take(name).map(|v| as_id_hash(name, v)).transpose()
    }

    /// Any value, nil included (an application may store nil).
    pub(crate) fn value(&mut self, name: &str) -> Option<Value> {
        self.fields.remove(name)
    }

    pub(crate) fn map(&mut self, name: &str) -> Result<Fields, DecodeError> {
        as_fields(name, self.need(name)?)
    }

    pub(crate) fn opt_map(&mut self, name: &str) -> Result<Option<Fields>, DecodeError> {
        self.take(name).map(|v| as_fields(name, v)).transpose()
    }

    pub(crate) fn array(&mut self, name: &str) -> Result<Vec<Value>, DecodeError> {
        match self.need(name)? {
            Value::Array(items) => Ok(items),
            _ => Err(wrong(name, "an array")),
        }
    }

    pub(crate) fn opt_array(&mut self, name: &str) -> Result<Option<Vec<Value>>, DecodeError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(wrong(name, "an array")),
        }
    }

    pub(crate) fn data(&mut self, name: &str) -> Result<Data, DecodeError> {
        self.map(name).map(|f| f.fields)
    }

    pub(crate) fn opt_data(&mut self, name: &str) -> Result<Data, DecodeError> {
        Ok(self.opt_map(name)?.map(|f| f.fields).unwrap_or_default())
    }

    pub(crate) fn device(&mut self, name: &str) -> Result<Device, DecodeError> {
        let Some(mut f) = self.opt_map(name)? else {
            return Ok(Device::default());
        };
        Ok(Device {
            user_agent: f.opt_string("user_agent")?,
            label: f.opt_string("label")?,
            ip: f.opt_string("ip")?,
        })
    }

    pub(crate) fn record(&mut self, name: &str) -> Result<Record, DecodeError> {
        record(self.map(name)?)
    }

    pub(crate) fn records(&mut self, name: &str) -> Result<Vec<Record>, DecodeError> {
        self.array(name)?
            .into_iter()
            .map(|v| record(as_fields(name, v)?))
            .collect()
    }

    pub(crate) fn changes(&mut self, name: &str) -> Result<Vec<Change>, DecodeError> {
        self.array(name)?
            .into_iter()
            .map(|v| change(as_fields(name, v)?))
            .collect()
    }

    pub(crate) fn strings(&mut self, name: &str) -> Result<Vec<String>, DecodeError> {
        self.array(name)?
            .into_iter()
            .map(|v| as_string(name, v))
            .collect()
    }

    pub(crate) fn flashes(&mut self, name: &str) -> Result<Vec<Flash>, DecodeError> {
        self.opt_array(name)?
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let mut f = as_fields(name, v)?;
                Ok(Flash {
                    level: f.string("level")?,
                    message: f.string("message")?,
                })
            })
            .collect()
    }
}

fn as_u64(name: &str, value: Value) -> Result<u64, DecodeError> {
    value
        .as_u64()
        .ok_or_else(|| wrong(name, "an unsigned integer"))
}

fn as_string(name: &str, value: Value) -> Result<String, DecodeError> {
    match value {
        Value::String(s) => s.into_str().ok_or_else(|| wrong(name, "UTF-8")),
        _ => Err(wrong(name, "a string")),
    }
}

fn as_id_hash(name: &str, value: Value) -> Result<IdHash, DecodeError> {
    match value {
        Value::Binary(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map(IdHash)
            .map_err(|_| wrong(name, "32 bytes (bin 8)")),
        _ => Err(wrong(name, "32 bytes (bin 8)")),
    }
}

fn as_fields(name: &str, value: Value) -> Result<Fields, DecodeError> {
    match value {
        Value::Map(entries) => Fields::from_entries(&format!("field `{name}`"), entries),
        _ => Err(wrong(name, "a map")),
    }
}

fn record(mut f: Fields) -> Result<Record, DecodeError> {
    Ok(Record {
        id_hash: f.id_hash("id_hash")?,
        user_id: f.opt_string("user_id")?,
        user_epoch: f.u64("user_epoch")?,
        created: f.u64("created")?,
        last_seen: f.u64("last_seen")?,
        idle_deadline: f.u64("idle_deadline")?,
        absolute_deadline: f.u64("absolute_deadline")?,
        version: f.u64("version")?,
        data: f.data("data")?,
        device: f.device("device")?,
    })
}

fn change(mut f: Fields) -> Result<Change, DecodeError> {
    let key = f.string("key")?;
    let set = f.value("set");
    let remove = f.opt_bool("remove")?;
    match (set, remove) {
        (Some(value), None | Some(false)) => Ok(Change::Set(key, value)),
        (None, Some(true)) => Ok(Change::Remove(key)),
        (None, None | Some(false)) => Err(malformed(format!(
            "change of `{key}`: needs `set` or `remove: true`"
        ))),
        (Some(_), Some(true)) => Err(malformed(format!(
            "change of `{key}`: has both `set` and `remove`"
        ))),
    }
}

/// A map under construction, written in insertion order.
#[derive(Debug, Default)]
pub(crate) struct MapBuilder(Vec<(Value, Value)>);

impl MapBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.push((Value::from(key), value.into()));
        self
    }

    /// Puts the field only when it is `Some`.
    pub(crate) fn opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    pub(crate) fn build(self) -> Value {
        Value::Map(self.0)
    }
}

pub(crate) fn id_hash_value(id: &IdHash) -> Value {
    Value::Binary(id.0.to_vec())
}

pub(crate) fn opt_string_value(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Nil, Value::from)
}

pub(crate) fn data_value(data: &Data) -> Value {
    Value::Map(
        data.iter()
            .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
            .collect(),
    )
}

pub(crate) fn device_value(device: &Device) -> Value {
    let Device {
        user_agent,
        label,
        ip,
    } = device;
    MapBuilder::new()
        .put("user_agent", opt_string_value(user_agent))
        .put("label", opt_string_value(label))
        .put("ip", opt_string_value(ip))
        .build()
}

pub(crate) fn record_value(r: &Record) -> Value {
    let Record {
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
    } = r;
    MapBuilder::new()
        .put("id_hash", id_hash_value(id_hash))
        .put("user_id", opt_string_value(user_id))
        .put("user_epoch", *user_epoch)
        .put("created", *created)
        .put("last_seen", *last_seen)
        .put("idle_deadline", *idle_deadline)
        .put("absolute_deadline", *absolute_deadline)
        .put("version", *version)
        .put("data", data_value(data))
        .put("device", device_value(device))
        .build()
}

pub(crate) fn change_value(c: &Change) -> Value {
    match c {
        Change::Set(key, value) => MapBuilder::new()
            .put("key", key.as_str())
            .put("set", value.clone())
            .build(),
        Change::Remove(key) => MapBuilder::new()
            .put("key", key.as_str())
            .put("remove", true)
            .build(),
    }
}

pub(crate) fn flash_value(f: &Flash) -> Value {
    MapBuilder::new()
        .put("level", f.level.as_str())
        .put("message", f.message.as_str())
        .build()
}
