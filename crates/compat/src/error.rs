//! pydantic's validation error items and FastAPI's 422 envelope.

use crate::value::Value;
use serde::Serialize;

/// One element of an error location: a field name or a list index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LocItem {
    Key(String),
    Index(usize),
}

/// A location such as `["body", "compute_config", "k8s_namespaces", 1]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Loc(Vec<LocItem>);

impl Loc {
    pub fn new(root: &str) -> Self {
        Loc(vec![LocItem::Key(root.to_owned())])
    }

    pub fn key(&self, key: &str) -> Self {
        let mut items = self.0.clone();
        items.push(LocItem::Key(key.to_owned()));
        Loc(items)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut items = self.0.clone();
        items.push(LocItem::Index(index));
        Loc(items)
    }
}

/// The path below the root, as a person reads it: `compute_config.k8s_namespaces[1]`.
impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, item) in self.0.iter().skip(1).enumerate() {
            match item {
                LocItem::Key(k) if i == 0 => write!(f, "{k}")?,
                LocItem::Key(k) => write!(f, ".{k}")?,
                LocItem::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One entry of FastAPI's `{"detail": [...]}`, field for field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorItem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Loc,
    pub msg: String,
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<serde_json::Value>,
}

impl ErrorItem {
    pub fn new(kind: &'static str, loc: Loc, msg: impl Into<String>, input: Value) -> Self {
        ErrorItem {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    pub fn with_ctx(mut self, ctx: serde_json::Value) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// `missing`: a required field or parameter that was not sent.
    pub fn missing(loc: Loc, input: Value) -> Self {
        Self::new("missing", loc, "Field required", input)
    }

    /// `value_error` raised by a field validator (`ValueError(msg)` in Python).
    pub fn value_error(loc: Loc, msg: &str, input: Value) -> Self {
        Self::new("value_error", loc, format!("Value error, {msg}"), input)
            .with_ctx(serde_json::json!({"error": {}}))
    }
}

/// The errors of one request, in the order FastAPI reports them.
pub type Errors = Vec<ErrorItem>;

/// FastAPI's 422 body.
#[derive(Debug, Serialize)]
pub struct ValidationBody<'a> {
    pub detail: &'a [ErrorItem],
}
