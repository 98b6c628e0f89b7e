//! Declarative pydantic models: a field list per model, validated in lax mode into the
//! value pydantic's `model_dump()` would give (every field present, `null` when unset,
//! coerced values in their final type).

use crate::error::{ErrorItem, Errors, Loc};
use crate::validate;
use crate::value::Value;
use indexmap::IndexMap;
use serde_json::json;
use std::cmp::Ordering;

/// A field type.
#[derive(Debug)]
pub enum Ty {
    Str,
    Int,
    /// `float`, optionally bounded (`ge`, `le`).
    Float {
        ge: Option<f64>,
        le: Option<f64>,
    },
    Bool,
    Uuid,
    /// `Literal[...]` of strings.
    Literal(&'static [&'static str]),
    List(&'static Ty),
    /// `Dict[str, T]`.
    Dict(&'static Ty),
    /// `Dict[str, Any]`.
    AnyDict,
    Model(&'static Model),
    /// `Optional[T]`.
    Nullable(&'static Ty),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

impl Field {
    pub const fn required(name: &'static str, ty: Ty) -> Field {
        Field {
            name,
            ty,
            required: true,
        }
    }

    /// An optional field whose default is `None`.
    pub const fn optional(name: &'static str, ty: &'static Ty) -> Field {
        Field {
            name,
            ty: Ty::Nullable(ty),
            required: false,
        }
    }
}

#[derive(Debug)]
pub struct Model {
    pub fields: &'static [Field],
}

/// Validates `v` against `ty`; `None` means errors were pushed.
pub fn validate(ty: &Ty, v: &Value, loc: Loc, errs: &mut Errors) -> Option<Value> {
    match ty {
        Ty::Str => validate::string(v, loc, errs).map(Value::Str),
        Ty::Int => int(v, loc, errs),
        Ty::Float { ge, le } => float(v, loc, errs, *ge, *le).map(Value::Float),
        Ty::Bool => validate::boolean(v, loc, errs).map(Value::Bool),
        Ty::Uuid => validate::uuid(v, loc, errs).map(|u| Value::Str(u.to_string())),
        Ty::Literal(allowed) => validate::literal(v, loc, errs, allowed).map(Value::from),
        Ty::List(item) => {
            validate::list(v, loc, errs, |x, l, e| validate(item, x, l, e)).map(Value::List)
        }
        Ty::Dict(value_ty) => dict(v, loc, errs, Some(value_ty)),
        Ty::AnyDict => dict(v, loc, errs, None),
        Ty::Model(model) => validate_model(model, v, loc, errs),
        Ty::Nullable(inner) => {
            if v.is_null() {
                Some(Value::Null)
            } else {
                validate(inner, v, loc, errs)
            }
        }
    }
}

/// Validates an object against a model; the result has every field, in model order.
pub fn validate_model(model: &Model, v: &Value, loc: Loc, errs: &mut Errors) -> Option<Value> {
    let Value::Object(fields) = v else {
        errs.push(ErrorItem::new(
            "model_attributes_type",
            loc,
            "Input should be a valid dictionary or object to extract fields from",
            v.clone(),
        ));
        return None;
    };
    let before = errs.len();
    let mut out = IndexMap::new();
    for f in model.fields {
        let floc = loc.key(f.name);
        match fields.get(f.name) {
            Some(x) => {
                if let Some(val) = validate(&f.ty, x, floc, errs) {
                    out.insert(f.name.to_owned(), val);
                }
            }
            None if f.required => errs.push(ErrorItem::missing(floc, v.clone())),
            None => {
                out.insert(f.name.to_owned(), Value::Null);
            }
        }
    }
    (errs.len() == before).then_some(Value::Object(out))
}

fn dict(v: &Value, loc: Loc, errs: &mut Errors, value_ty: Option<&Ty>) -> Option<Value> {
    let Value::Object(map) = v else {
        errs.push(ErrorItem::new(
            "dict_type",
            loc,
            "Input should be a valid dictionary",
            v.clone(),
        ));
        return None;
    };
    let Some(value_ty) = value_ty else {
        return Some(v.clone());
    };
    let before = errs.len();
    let mut out = IndexMap::new();
    for (k, x) in map {
        if let Some(val) = validate(value_ty, x, loc.key(k), errs) {
            out.insert(k.clone(), val);
        }
    }
    (errs.len() == before).then_some(Value::Object(out))
}

fn int(v: &Value, loc: Loc, errs: &mut Errors) -> Option<Value> {
    let fail = |errs: &mut Errors, kind: &'static str, msg: &str| {
        errs.push(ErrorItem::new(kind, loc.clone(), msg, v.clone()));
        None
    };
    match v {
        Value::Int(d) => Some(Value::Int(d.clone())),
        Value::Bool(b) => Some(Value::Int(if *b { "1" } else { "0" }.into())),
        Value::Float(f) if !f.is_finite() => {
            fail(errs, "finite_number", "Input should be a finite number")
        }
        Value::Float(f) if f.fract() != 0.0 => fail(
            errs,
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
        ),
        Value::Float(f) if f.abs() < 9.2e18 => Some(Value::Int(format!("{}", *f as i64))),
        Value::Float(_) => fail(
            errs,
            "int_parsing_size",
            "Unable to parse input string as an integer, exceeded maximum size",
        ),
        Value::Str(s) => match validate::str_as_int(s) {
            Some(n) if n.unsigned_abs() < 10u128.pow(30) => Some(Value::Int(n.to_string())),
            _ => fail(
                errs,
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ),
        },
        Value::LoneSurrogates(_) => {
            validate::string_unicode(v, loc, errs);
            None
        }
        _ => fail(errs, "int_type", "Input should be a valid integer"),
    }
}

/// pydantic's `str_as_float`: surrounding whitespace, `inf`/`nan` words and `_`
/// separators are accepted.
fn str_as_float(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>() {
        return Some(f);
    }
    if s.starts_with('_') || s.ends_with('_') || s.contains("__") || !s.contains('_') {
        return None;
    }
    s.replace('_', "").parse().ok()
}

fn float(v: &Value, loc: Loc, errs: &mut Errors, ge: Option<f64>, le: Option<f64>) -> Option<f64> {
    let f = match v {
        Value::Float(f) => *f,
        Value::Int(d) => d.parse::<f64>().unwrap_or(f64::INFINITY),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::LoneSurrogates(_) => {
            validate::string_unicode(v, loc, errs);
            return None;
        }
        Value::Str(s) => match str_as_float(s) {
            Some(f) => f,
            None => {
                errs.push(ErrorItem::new(
                    "float_parsing",
                    loc,
                    "Input should be a valid number, unable to parse string as a number",
                    v.clone(),
                ));
                return None;
            }
        },
        _ => {
            errs.push(ErrorItem::new(
                "float_type",
                loc,
                "Input should be a valid number",
                v.clone(),
            ));
            return None;
        }
    };
    // NaN fails every bound; pydantic-core checks `le` before `ge`, so NaN reports the
    // upper bound.
    if let Some(le) =
        le.filter(|l| !matches!(f.partial_cmp(l), Some(Ordering::Less | Ordering::Equal)))
    {
        errs.push(
            ErrorItem::new(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {le}"),
                v.clone(),
            )
            .with_ctx(json!({ "le": le })),
        );
        return None;
    }
    if let Some(ge) =
        ge.filter(|g| !matches!(f.partial_cmp(g), Some(Ordering::Greater | Ordering::Equal)))
    {
        errs.push(
            ErrorItem::new(
                "greater_than_equal",
                loc,
                format!("Input should be greater than or equal to {ge}"),
                v.clone(),
            )
            .with_ctx(json!({ "ge": ge })),
        );
        return None;
    }
    Some(f)
}
