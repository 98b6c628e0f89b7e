//! pydantic v2 lax-mode validators for the shapes our request models use.
//!
//! Each validator either returns the value or pushes pydantic's error for it and returns
//! `None`, so one pass collects every error of a request in pydantic's order.

use crate::error::{ErrorItem, Errors, Loc};
use crate::value::Value;
use indexmap::IndexMap;
use serde_json::json;

/// pydantic's error for a string with lone surrogates where a validator must read the
/// text (constrained strings, literals, UUIDs, numbers and booleans from text).
pub fn string_unicode(v: &Value, loc: Loc, errs: &mut Errors) {
    errs.push(ErrorItem::new(
        "string_unicode",
        loc,
        "Input should be a valid string, unable to parse raw data as a unicode string",
        v.clone(),
    ));
}

/// `str`: only strings are strings in lax mode (no number coercion). A plain `str`
/// takes lone surrogates as they are (shown as U+FFFD here).
pub fn string(v: &Value, loc: Loc, errs: &mut Errors) -> Option<String> {
    match v {
        Value::Str(s) | Value::LoneSurrogates(s) => Some(s.clone()),
        other => {
            errs.push(ErrorItem::new(
                "string_type",
                loc,
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    }
}

/// `str` with `min_length` / `max_length`, counted in characters as Python does.
pub fn string_len(
    v: &Value,
    loc: Loc,
    errs: &mut Errors,
    min: Option<usize>,
    max: Option<usize>,
) -> Option<String> {
    if let Value::LoneSurrogates(_) = v {
        string_unicode(v, loc, errs);
        return None;
    }
    let s = string(v, loc.clone(), errs)?;
    let n = s.chars().count();
    let plural = |k: usize| if k == 1 { "character" } else { "characters" };
    if let Some(min) = min.filter(|&m| n < m) {
        errs.push(
            ErrorItem::new(
                "string_too_short",
                loc,
                format!("String should have at least {min} {}", plural(min)),
                v.clone(),
            )
            .with_ctx(json!({ "min_length": min })),
        );
        return None;
    }
    if let Some(max) = max.filter(|&m| n > m) {
        errs.push(
            ErrorItem::new(
                "string_too_long",
                loc,
                format!("String should have at most {max} {}", plural(max)),
                v.clone(),
            )
            .with_ctx(json!({ "max_length": max })),
        );
        return None;
    }
    Some(s)
}

/// `Literal[...]` of strings: returns the matching allowed value.
pub fn literal(
    v: &Value,
    loc: Loc,
    errs: &mut Errors,
    allowed: &[&'static str],
) -> Option<&'static str> {
    if let Value::LoneSurrogates(_) = v {
        string_unicode(v, loc, errs);
        return None;
    }
    if let Value::Str(s) = v {
        if let Some(hit) = allowed.iter().find(|a| **a == s) {
            return Some(hit);
        }
    }
    let expected = expected_list(allowed);
    errs.push(
        ErrorItem::new(
            "literal_error",
            loc,
            format!("Input should be {expected}"),
            v.clone(),
        )
        .with_ctx(json!({ "expected": expected })),
    );
    None
}

/// `'a', 'b' or 'c'`, as pydantic words a choice.
fn expected_list(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// `List[T]`: every item is validated, and every failing item reports its own error.
pub fn list<T>(
    v: &Value,
    loc: Loc,
    errs: &mut Errors,
    item: impl Fn(&Value, Loc, &mut Errors) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::List(items) = v else {
        errs.push(ErrorItem::new(
            "list_type",
            loc,
            "Input should be a valid list",
            v.clone(),
        ));
        return None;
    };
    let before = errs.len();
    let out: Vec<Option<T>> = items
        .iter()
        .enumerate()
        .map(|(i, x)| item(x, loc.index(i), errs))
        .collect();
    if errs.len() > before {
        return None;
    }
    out.into_iter().collect()
}

/// `Optional[T]`: `null` is `Some(None)`.
pub fn nullable<T>(
    v: &Value,
    loc: Loc,
    errs: &mut Errors,
    inner: impl FnOnce(&Value, Loc, &mut Errors) -> Option<T>,
) -> Option<Option<T>> {
    if v.is_null() {
        Some(None)
    } else {
        inner(v, loc, errs).map(Some)
    }
}

/// `bool` in lax mode: booleans, 0/1, and the usual words.
pub fn boolean(v: &Value, loc: Loc, errs: &mut Errors) -> Option<bool> {
    let parsing = |errs: &mut Errors, loc: Loc| {
        errs.push(ErrorItem::new(
            "bool_parsing",
            loc,
            "Input should be a valid boolean, unable to interpret input",
            v.clone(),
        ));
        None
    };
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(d) if d == "0" => Some(false),
        Value::Int(d) if d == "1" => Some(true),
        Value::Float(f) if *f == 0.0 => Some(false),
        Value::Float(f) if *f == 1.0 => Some(true),
        Value::Int(_) => parsing(errs, loc),
        Value::Str(s) => match str_as_bool(s) {
            Some(b) => Some(b),
            None => parsing(errs, loc),
        },
        Value::LoneSurrogates(_) => {
            string_unicode(v, loc, errs);
            None
        }
        other => {
            errs.push(ErrorItem::new(
                "bool_type",
                loc,
                "Input should be a valid boolean",
                other.clone(),
            ));
            None
        }
    }
}

/// pydantic's words for true and false.
pub fn str_as_bool(s: &str) -> Option<bool> {
    const FALSE: [&str; 6] = ["0", "f", "n", "no", "off", "false"];
    const TRUE: [&str; 6] = ["1", "t", "y", "on", "yes", "true"];
    if FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else if TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else {
        None
    }
}

const INT_PARSING: &str = "Input should be a valid integer, unable to parse string as an integer";

/// pydantic's `str_as_int`: surrounding whitespace, `+`, `_` separators and a zero
/// fraction (`2.0`) are accepted. `None` when it is not an integer; the value saturates
/// (callers bound it with `ge`/`le` first, which pydantic does on the big integer).
pub fn str_as_int(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.len() > 4300 {
        return None;
    }
    let s = match s.find('.') {
        Some(i) if s[i + 1..].chars().all(|c| c == '0') => &s[..i],
        _ => s,
    };
    let cleaned;
    let s = if s.contains('_') {
        if s.starts_with('_') || s.ends_with('_') || s.contains("__") {
            return None;
        }
        cleaned = s.replace('_', "");
        cleaned.as_str()
    } else {
        s
    };
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let negative = s.starts_with('-');
    // Saturate instead of overflowing: only the comparison with small bounds matters.
    let magnitude = digits.trim_start_matches('0');
    let value = if magnitude.len() > 30 {
        i128::MAX
    } else {
        magnitude.parse::<i128>().unwrap_or(0)
    };
    Some(if negative { -value } else { value })
}

/// An integer query parameter with optional `ge` / `le` bounds, from its raw text.
pub fn query_int(
    raw: &str,
    loc: Loc,
    errs: &mut Errors,
    ge: Option<i64>,
    le: Option<i64>,
) -> Option<i128> {
    let input = Value::Str(raw.to_owned());
    let Some(n) = str_as_int(raw) else {
        if raw.trim().len() > 4300 {
            errs.push(ErrorItem::new(
                "int_parsing_size",
                loc,
                "Unable to parse input string as an integer, exceeded maximum size",
                input,
            ));
        } else {
            errs.push(ErrorItem::new("int_parsing", loc, INT_PARSING, input));
        }
        return None;
    };
    bounded(n, input, loc, errs, ge, le)
}

/// `n` checked against `ge` / `le`; errors show `input`.
fn bounded(
    n: i128,
    input: Value,
    loc: Loc,
    errs: &mut Errors,
    ge: Option<i64>,
    le: Option<i64>,
) -> Option<i128> {
    if let Some(ge) = ge.filter(|&g| n < i128::from(g)) {
        errs.push(
            ErrorItem::new(
                "greater_than_equal",
                loc,
                format!("Input should be greater than or equal to {ge}"),
                input,
            )
            .with_ctx(json!({ "ge": ge })),
        );
        return None;
    }
    if let Some(le) = le.filter(|&l| n > i128::from(l)) {
        errs.push(
            ErrorItem::new(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {le}"),
                input,
            )
            .with_ctx(json!({ "le": le })),
        );
        return None;
    }
    Some(n)
}

/// `int` with optional bounds, from a JSON value: integers, and strings that read as
/// integers (lax mode); anything else is `int_type` / `int_parsing`.
pub fn int(
    v: &Value,
    loc: Loc,
    errs: &mut Errors,
    ge: Option<i64>,
    le: Option<i64>,
) -> Option<i128> {
    match v {
        Value::Int(n) => {
            let parsed = str_as_int(n).unwrap_or(i128::MAX);
            bounded(parsed, v.clone(), loc, errs, ge, le)
        }
        Value::Str(s) => query_int(s, loc, errs, ge, le),
        other => {
            errs.push(ErrorItem::new(
                "int_type",
                loc,
                "Input should be a valid integer",
                other.clone(),
            ));
            None
        }
    }
}

/// `datetime` from an ISO 8601 / RFC 3339 string (a time without an offset is UTC);
/// anything else is `datetime_type` / `datetime_parsing`.
pub fn datetime(v: &Value, loc: Loc, errs: &mut Errors) -> Option<chrono::DateTime<chrono::Utc>> {
    let Value::Str(s) = v else {
        errs.push(ErrorItem::new(
            "datetime_type",
            loc,
            "Input should be a valid datetime",
            v.clone(),
        ));
        return None;
    };
    let text = s.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        });
    match parsed {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(
                ErrorItem::new(
                    "datetime_parsing",
                    loc,
                    format!("Input should be a valid datetime, {e}"),
                    v.clone(),
                )
                .with_ctx(json!({ "error": e.to_string() })),
            );
            None
        }
    }
}

/// `UUID` from text, with the messages of the Rust `uuid` crate that pydantic-core uses.
pub fn uuid_text(raw: &str, loc: Loc, errs: &mut Errors) -> Option<uuid::Uuid> {
    match parse_uuid(raw) {
        Ok(u) => Some(u),
        Err(error) => {
            errs.push(
                ErrorItem::new(
                    "uuid_parsing",
                    loc,
                    format!("Input should be a valid UUID, {error}"),
                    Value::Str(raw.to_owned()),
                )
                .with_ctx(json!({ "error": error })),
            );
            None
        }
    }
}

/// Parses a UUID as the `uuid` crate pydantic-core is built with does: its `urn:uuid:`
/// prefix must be in lower case (newer versions of the crate accept any case), and a
/// prefix in another case fails on its first character, which is not a hex digit.
fn parse_uuid(raw: &str) -> Result<uuid::Uuid, String> {
    const URN: &str = "urn:uuid:";
    if raw.len() == 45 && raw.is_char_boundary(URN.len()) {
        let prefix = &raw[..URN.len()];
        if prefix.eq_ignore_ascii_case(URN) && prefix != URN {
            let first = raw.chars().next().unwrap_or_default();
            return Err(format!("invalid character: found `{first}` at 0"));
        }
    }
    uuid::Uuid::parse_str(raw).map_err(|e| e.to_string())
}

/// `UUID` from a JSON value.
pub fn uuid(v: &Value, loc: Loc, errs: &mut Errors) -> Option<uuid::Uuid> {
    match v {
        Value::Str(s) => uuid_text(s, loc, errs),
        Value::LoneSurrogates(_) => {
            string_unicode(v, loc, errs);
            None
        }
        other => {
            errs.push(ErrorItem::new(
                "uuid_type",
                loc,
                "UUID input should be a string, bytes or UUID object",
                other.clone(),
            ));
            None
        }
    }
}

/// The fields of an object being validated as a pydantic model, taken in declaration
/// order by hand-written validators (`crate::schema::Model` describes a model as data).
pub struct Fields<'a> {
    fields: &'a IndexMap<String, Value>,
    whole: &'a Value,
    loc: Loc,
    pub errs: &'a mut Errors,
}

/// Starts validating `v` as a model, or reports `model_attributes_type`.
pub fn model<'a>(v: &'a Value, loc: Loc, errs: &'a mut Errors) -> Option<Fields<'a>> {
    match v {
        Value::Object(fields) => Some(Fields {
            fields,
            whole: v,
            loc,
            errs,
        }),
        other => {
            errs.push(ErrorItem::new(
                "model_attributes_type",
                loc,
                "Input should be a valid dictionary or object to extract fields from",
                other.clone(),
            ));
            None
        }
    }
}

impl Fields<'_> {
    /// The raw value of a field, if sent.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// A required field: absent is `missing` with the whole object as input.
    pub fn required<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&Value, Loc, &mut Errors) -> Option<T>,
    ) -> Option<T> {
        let loc = self.loc.key(name);
        match self.fields.get(name) {
            Some(v) => f(v, loc, self.errs),
            None => {
                self.errs.push(ErrorItem::missing(loc, self.whole.clone()));
                None
            }
        }
    }

    /// An optional field that defaults to `None`; `null` is `None` too.
    /// The outer `None` means the field was invalid.
    pub fn optional<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&Value, Loc, &mut Errors) -> Option<T>,
    ) -> Option<Option<T>> {
        let loc = self.loc.key(name);
        match self.fields.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => f(v, loc, self.errs).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_like_pydantic() {
        for (s, want) in [
            (" 5 ", Some(5)),
            ("+1", Some(1)),
            ("-0", Some(0)),
            ("1_000", Some(1000)),
            ("2.0", Some(2)),
            ("00012", Some(12)),
            ("1.000", Some(1)),
        ] {
            assert_eq!(str_as_int(s), want, "{s}");
        }
        for s in [
            "2.5", "1e3", "0x10", "５", "", " ", "_1", "1__0", "٣", "true", "-",
        ] {
            assert_eq!(str_as_int(s), None, "{s}");
        }
    }

    #[test]
    fn literal_wording() {
        assert_eq!(expected_list(&["k8s"]), "'k8s'");
        assert_eq!(expected_list(&["a", "b", "c"]), "'a', 'b' or 'c'");
    }
}
