//! How FastAPI turns a request body into the value it validates (docs/compatibility.md).

use crate::error::{ErrorItem, Loc};
use crate::json::{self, JsonError};
use crate::value::Value;

/// What validation sees of the body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No bytes at all.
    Missing,
    /// A parsed JSON document, or the raw text of a non-JSON body.
    Present(Value),
}

/// A body that cannot be validated at all.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Malformed JSON: a 422 with one `json_invalid` item.
    Invalid(Box<ErrorItem>),
    /// Not UTF-8, too deep, too large a number: FastAPI's 400.
    Unparseable,
}

/// The text FastAPI sends with the 400 for a body it could not decode.
pub const UNPARSEABLE_DETAIL: &str = "There was an error parsing the body";

/// True for `application/json` and `application/<anything>+json`, parameters ignored,
/// the way `email.message.Message` reads a Content-Type.
pub fn is_json_content_type(header: Option<&str>) -> bool {
    let Some(header) = header else { return false };
    let essence = header
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut parts = essence.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("application"), Some(sub), None) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// Decodes a request body: empty is missing, JSON types are parsed, anything else is
/// handed over as text.
pub fn decode(content_type: Option<&str>, bytes: &[u8]) -> Result<Body, BodyError> {
    if bytes.is_empty() {
        return Ok(Body::Missing);
    }
    if !is_json_content_type(content_type) {
        return Ok(Body::Present(Value::Str(
            String::from_utf8_lossy(bytes).into_owned(),
        )));
    }
    let (text, surrogates) = json::decode_utf8(bytes).ok_or(BodyError::Unparseable)?;
    match json::parse_marked(&text, &surrogates) {
        Ok(value) => Ok(Body::Present(value)),
        Err(JsonError::Syntax { msg, pos }) => Err(BodyError::Invalid(Box::new(
            ErrorItem::new(
                "json_invalid",
                Loc::new("body").index(pos),
                "JSON decode error",
                Value::Object(Default::default()),
            )
            .with_ctx(serde_json::json!({ "error": msg })),
        ))),
        Err(JsonError::Unparseable) => Err(BodyError::Unparseable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "APPLICATION/JSON",
            "application/json; charset=latin-1",
            "application/merge-patch+json",
            " application/json ",
        ] {
            assert!(is_json_content_type(Some(ok)), "{ok}");
        }
        for no in [
            "text/json",
            "application/xml",
            "application/json/x",
            "json",
            "",
            "application/jsonx",
        ] {
            assert!(!is_json_content_type(Some(no)), "{no}");
        }
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn bodies() {
        assert_eq!(decode(Some("text/plain"), b""), Ok(Body::Missing));
        assert_eq!(
            decode(None, b"{}"),
            Ok(Body::Present(Value::Str("{}".into())))
        );
        assert_eq!(
            decode(Some("application/json"), b"\xff"),
            Err(BodyError::Unparseable)
        );
        assert_eq!(
            decode(Some("application/json"), b"{\x00\x00\x00"),
            Err(BodyError::Unparseable)
        );
        assert_eq!(
            decode(Some("application/json"), b"\"\xed\xa0\x80\""),
            Ok(Body::Present(Value::LoneSurrogates("\u{FFFD}".into())))
        );
        // A real U+FFFD (EF BF BD) is just text; an escaped lone surrogate is marked.
        assert_eq!(
            decode(
                Some("application/json"),
                b"[\"\xef\xbf\xbd\", \"\\udc00x\", \"\\ud83d\\ude00\"]"
            ),
            Ok(Body::Present(Value::List(vec![
                Value::Str("\u{FFFD}".into()),
                Value::LoneSurrogates("\u{FFFD}x".into()),
                Value::Str("\u{1F600}".into()),
            ])))
        );
    }
}
