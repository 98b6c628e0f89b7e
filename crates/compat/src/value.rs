//! The value model of a decoded request body, as Python's `json` module builds it.
//!
//! It keeps what `serde_json::Value` would lose: integers of any size, floats that are
//! NaN or infinite, and object keys in first-seen order with the last value winning.

use indexmap::IndexMap;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value as Python sees it after `json.loads`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Canonical decimal digits of a Python `int` (no leading zeros, no `-0`).
    Int(String),
    Float(f64),
    Str(String),
    /// A string that held lone UTF-16 surrogates, each replaced by U+FFFD here. Python
    /// keeps them; pydantic lets them through a plain `str` but fails any validator
    /// that must read the text (`string_unicode`).
    LoneSurrogates(String),
    List(Vec<Value>),
    Object(IndexMap<String, Value>),
}

impl Value {
    pub fn as_object(&self) -> Option<&IndexMap<String, Value>> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The same value as `serde_json` sees it (integers beyond 64 bits become floats).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(d) => d
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| {
                    d.parse::<f64>()
                        .map(serde_json::Value::from)
                        .unwrap_or_default()
                }),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_default(),
            Value::Str(s) | Value::LoneSurrogates(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }
}

/// A JSON value as it would decode from its text (integers keep their digits).
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) if n.is_f64() => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::Number(n) => Value::Int(n.to_string()),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from).collect()),
            serde_json::Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

/// Serializes in the form FastAPI echoes an input: NaN and infinities become `null`
/// (docs/compatibility.md), integers keep every digit.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(digits) => match digits.parse::<i64>() {
                Ok(n) => serializer.serialize_i64(n),
                Err(_) => match serde_json::value::RawValue::from_string(digits.clone()) {
                    Ok(raw) => raw.serialize(serializer),
                    Err(_) => serializer.serialize_unit(),
                },
            },
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(_) => serializer.serialize_unit(),
            Value::Str(s) | Value::LoneSurrogates(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    out.serialize_entry(k, v)?;
                }
                out.end()
            }
        }
    }
}
