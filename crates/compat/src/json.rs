//! A JSON parser that accepts, rejects and reports exactly like CPython's `json.loads`
//! (the C scanner of Python 3.11/3.12), which is what FastAPI runs on a request body.
//!
//! Error positions count characters (code points), not bytes, and the messages are
//! Python's, because clients see both in a `json_invalid` error.

use crate::value::Value;
use indexmap::IndexMap;

/// Nesting deeper than this is refused as unparseable (docs/compatibility.md: 256 levels are fine).
pub const MAX_DEPTH: usize = 256;
/// CPython refuses to turn longer digit strings into an `int` (`sys.int_info`).
const MAX_INT_DIGITS: usize = 4300;

#[derive(Debug, Clone, PartialEq)]
pub enum JsonError {
    /// A `json.JSONDecodeError`: Python's message and the character offset.
    Syntax { msg: &'static str, pos: usize },
    /// Anything else Python would raise while decoding (too deep, an oversized integer):
    /// FastAPI answers these with a 400.
    Unparseable,
}

/// Parses a whole document the way `json.loads(str)` does.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    parse_marked(text, &[])
}

/// [`parse`] of text from [`decode_utf8`]: `surrogates` are the byte offsets where the
/// body held encoded surrogates (now U+FFFD), so that strings holding them are known.
pub fn parse_marked(text: &str, surrogates: &[usize]) -> Result<Value, JsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        surrogates,
        depth: 0,
    };
    let start = p.skip_ws(0);
    let (value, end) = p.value(start).map_err(|e| p.locate(e))?;
    let end = p.skip_ws(end);
    if end != p.s.len() {
        return Err(p.locate(Fail::Syntax("Extra data", end)));
    }
    Ok(value)
}

enum Fail {
    /// Message and byte offset.
    Syntax(&'static str, usize),
    Unparseable,
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    /// Sorted offsets of U+FFFD that stand for surrogates of the raw body.
    surrogates: &'a [usize],
    depth: usize,
}

type Step<T> = Result<(T, usize), Fail>;

impl Parser<'_> {
    fn locate(&self, fail: Fail) -> JsonError {
        match fail {
            Fail::Syntax(msg, byte) => JsonError::Syntax {
                msg,
                pos: self.text[..byte].chars().count(),
            },
            Fail::Unparseable => JsonError::Unparseable,
        }
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while i < self.s.len() && matches!(self.s[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    fn starts(&self, i: usize, lit: &str) -> bool {
        self.s[i..].starts_with(lit.as_bytes())
    }

    /// Python's `scan_once`: a value starting exactly at `i`, or "Expecting value" there.
    fn value(&mut self, i: usize) -> Step<Value> {
        let expecting = Fail::Syntax("Expecting value", i);
        match self.at(i) {
            None => Err(expecting),
            Some(b'"') => {
                let ((s, lone), end) = self.string(i + 1)?;
                Ok((
                    if lone {
                        Value::LoneSurrogates(s)
                    } else {
                        Value::Str(s)
                    },
                    end,
                ))
            }
            Some(b'{') => self.nested(i, Self::object),
            Some(b'[') => self.nested(i, Self::array),
            Some(b'n') if self.starts(i, "null") => Ok((Value::Null, i + 4)),
            Some(b't') if self.starts(i, "true") => Ok((Value::Bool(true), i + 4)),
            Some(b'f') if self.starts(i, "false") => Ok((Value::Bool(false), i + 5)),
            Some(b'N') if self.starts(i, "NaN") => Ok((Value::Float(f64::NAN), i + 3)),
            Some(b'I') if self.starts(i, "Infinity") => Ok((Value::Float(f64::INFINITY), i + 8)),
            Some(b'-') if self.starts(i, "-Infinity") => {
                Ok((Value::Float(f64::NEG_INFINITY), i + 9))
            }
            Some(_) => self.number(i).unwrap_or(Err(expecting)),
        }
    }

    fn nested(&mut self, i: usize, f: fn(&mut Self, usize) -> Step<Value>) -> Step<Value> {
        if self.depth == MAX_DEPTH {
            return Err(Fail::Unparseable);
        }
        self.depth += 1;
        let out = f(self, i + 1);
        self.depth -= 1;
        out
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`; `None` when no number starts here.
    fn number(&self, start: usize) -> Option<Step<Value>> {
        let digits = |mut i: usize| {
            while matches!(self.at(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if self.at(i) == Some(b'-') {
            i += 1;
        }
        match self.at(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i),
            _ => return None,
        }
        let int_end = i;
        let mut is_float = false;
        if self.at(i) == Some(b'.') && matches!(self.at(i + 1), Some(b'0'..=b'9')) {
            i = digits(i + 1);
            is_float = true;
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(self.at(j), Some(b'-' | b'+')) {
                j += 1;
            }
            let end = digits(j);
            if end > j {
                i = end;
                is_float = true;
            }
        }
        let lexeme = &self.text[start..i];
        if is_float {
            // Rust and Python agree on decimal-to-double rounding; overflow is infinity.
            let f: f64 = lexeme.parse().unwrap_or(f64::NAN);
            return Some(Ok((Value::Float(f), i)));
        }
        let (neg, body) = match lexeme.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, lexeme),
        };
        if body.len() > MAX_INT_DIGITS {
            return Some(Err(Fail::Unparseable));
        }
        let canonical = if neg && body != "0" {
            lexeme.to_owned()
        } else {
            body.to_owned()
        };
        debug_assert!(i == int_end || !is_float);
        Some(Ok((Value::Int(canonical), i)))
    }

    /// A string whose opening quote is at `begin - 1`, and whether it held a lone
    /// surrogate (a `\uD800`-style escape without its pair, or one from the raw body).
    fn string(&self, begin: usize) -> Step<(String, bool)> {
        let unterminated = || Fail::Syntax("Unterminated string starting at", begin - 1);
        let mut out = String::new();
        let mut lone = false;
        let mut i = begin;
        loop {
            let chunk_start = i;
            while i < self.s.len() && self.s[i] != b'"' && self.s[i] != b'\\' {
                if self.s[i] < 0x20 {
                    return Err(Fail::Syntax("Invalid control character at", i));
                }
                i += 1;
            }
            out.push_str(&self.text[chunk_start..i]);
            let first = self.surrogates.partition_point(|&at| at < chunk_start);
            lone |= self.surrogates.get(first).is_some_and(|&at| at < i);
            match self.at(i) {
                None => return Err(unterminated()),
                Some(b'"') => return Ok(((out, lone), i + 1)),
                _ => {}
            }
            // A backslash at i.
            let Some(esc) = self.at(i + 1) else {
                return Err(unterminated());
            };
            if esc != b'u' {
                out.push(match esc {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => return Err(Fail::Syntax("Invalid \\escape", i)),
                });
                i += 2;
                continue;
            }
            let u = i + 1;
            let bad_u = Fail::Syntax("Invalid \\uXXXX escape", u);
            if u + 5 >= self.s.len() {
                return Err(bad_u);
            }
            let hi = self.hex4(u + 1).ok_or(bad_u)?;
            i = u + 5;
            let mut code = hi;
            if (0xD800..0xDC00).contains(&hi)
                && u + 11 < self.s.len()
                && self.s[i] == b'\\'
                && self.s[i + 1] == b'u'
            {
                let lo = self
                    .hex4(i + 2)
                    .ok_or(Fail::Syntax("Invalid \\uXXXX escape", i + 1))?;
                if (0xDC00..0xE000).contains(&lo) {
                    code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            // A lone surrogate cannot live in a Rust string; docs/compatibility.md echoes it
            // as U+FFFD.
            let c = char::from_u32(code);
            lone |= c.is_none();
            out.push(c.unwrap_or('\u{FFFD}'));
        }
    }

    fn hex4(&self, i: usize) -> Option<u32> {
        let digits = self.s.get(i..i + 4)?;
        digits.iter().try_fold(0u32, |acc, &b| {
            let d = (b as char).to_digit(16)?;
            Some(acc * 16 + d)
        })
    }

    /// An object whose `{` is at `i - 1`.
    fn object(&mut self, i: usize) -> Step<Value> {
        let mut map = IndexMap::new();
        let mut i = self.skip_ws(i);
        if self.at(i) == Some(b'}') {
            return Ok((Value::Object(map), i + 1));
        }
        loop {
            if self.at(i) != Some(b'"') {
                return Err(Fail::Syntax(
                    "Expecting property name enclosed in double quotes",
                    i,
                ));
            }
            // A key is a plain `str` to pydantic: a lone surrogate in it is no error.
            let ((key, _), after_key) = self.string(i + 1)?;
            i = self.skip_ws(after_key);
            if self.at(i) != Some(b':') {
                return Err(Fail::Syntax("Expecting ':' delimiter", i));
            }
            i = self.skip_ws(i + 1);
            let (value, after_value) = self.value(i)?;
            map.insert(key, value);
            i = self.skip_ws(after_value);
            match self.at(i) {
                Some(b'}') => return Ok((Value::Object(map), i + 1)),
                Some(b',') => i = self.skip_ws(i + 1),
                _ => return Err(Fail::Syntax("Expecting ',' delimiter", i)),
            }
        }
    }

    /// An array whose `[` is at `i - 1`.
    fn array(&mut self, i: usize) -> Step<Value> {
        let mut items = Vec::new();
        let mut i = self.skip_ws(i);
        if self.at(i) == Some(b']') {
            return Ok((Value::List(items), i + 1));
        }
        loop {
            let (value, after) = self.value(i)?;
            items.push(value);
            i = self.skip_ws(after);
            match self.at(i) {
                Some(b']') => return Ok((Value::List(items), i + 1)),
                Some(b',') => i = self.skip_ws(i + 1),
                _ => return Err(Fail::Syntax("Expecting ',' delimiter", i)),
            }
        }
    }
}

/// Decodes request bytes the way `json.loads(bytes)` would before parsing, under the
/// rules of docs/compatibility.md: a UTF-8 byte-order mark is skipped, UTF-8-encoded
/// surrogates (which Python lets through) become U+FFFD, and anything else that is not
/// UTF-8, including bodies Python would read as UTF-16 or UTF-32, is `None`. Also
/// returns the offsets of those U+FFFD, for [`parse_marked`].
pub fn decode_utf8(bytes: &[u8]) -> Option<(String, Vec<usize>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if looks_utf16_or_32(bytes) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Some((s.to_owned(), Vec::new())),
        Err(_) => decode_with_surrogates(bytes),
    }
}

/// Python's `json.detect_encoding` for the encodings that are not UTF-8.
fn looks_utf16_or_32(b: &[u8]) -> bool {
    let boms: [&[u8]; 4] = [
        b"\xFF\xFE",
        b"\xFE\xFF",
        b"\x00\x00\xFE\xFF",
        b"\xFF\xFE\x00\x00",
    ];
    if boms.iter().any(|bom| b.starts_with(bom)) {
        return true;
    }
    match b.len() {
        0 | 1 | 3 => false,
        2 => b[0] == 0 || b[1] == 0,
        _ => b[0] == 0 || b[1] == 0,
    }
}

fn decode_with_surrogates(mut bytes: &[u8]) -> Option<(String, Vec<usize>)> {
    let mut out = String::with_capacity(bytes.len());
    let mut at = Vec::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return Some((out, at));
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).ok()?);
                // An encoded surrogate: ED A0..BF 80..BF.
                match rest {
                    [0xED, b1 @ 0xA0..=0xBF, b2 @ 0x80..=0xBF, ..]
                        if *b1 >= 0xA0 && *b2 >= 0x80 =>
                    {
                        at.push(out.len());
                        out.push('\u{FFFD}');
                        bytes = &rest[3..];
                    }
                    _ => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> (String, usize) {
        match parse(s) {
            Err(JsonError::Syntax { msg, pos }) => (msg.to_owned(), pos),
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_keep_first_position_and_last_value() {
        let v = parse(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(obj["a"], Value::Int("3".into()));
    }

    #[test]
    fn python_messages() {
        assert_eq!(err(""), ("Expecting value".into(), 0));
        assert_eq!(err("  "), ("Expecting value".into(), 2));
        assert_eq!(err("[1,]"), ("Expecting value".into(), 3));
        assert_eq!(err(r#"{"a" 1}"#), ("Expecting ':' delimiter".into(), 5));
        assert_eq!(err(r#""é\x""#), ("Invalid \\escape".into(), 2));
        assert_eq!(err(r#""\u12"#), ("Invalid \\uXXXX escape".into(), 2));
    }

    #[test]
    fn nesting_limit() {
        assert!(parse(&("[".repeat(256) + &"]".repeat(256))).is_ok());
        assert_eq!(parse(&"[".repeat(257)), Err(JsonError::Unparseable));
    }
}
