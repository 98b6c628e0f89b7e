//! Output formats as pydantic and Python print them.

use chrono::{DateTime, Timelike, Utc};

/// A UTC datetime the way pydantic serializes it: six fraction digits when the
/// microseconds are not zero, none otherwise, and `Z`.
pub fn datetime(t: DateTime<Utc>) -> String {
    if t.nanosecond() / 1000 == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// `repr()` of a Python string: single quotes unless the text holds a single quote and
/// no double quote, with backslash escapes for quotes, backslashes and non-printables.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr()` of a Python list of strings: `['a', 'b']`.
pub fn py_list_repr<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| py_repr(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn datetimes() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 30).unwrap();
        assert_eq!(datetime(t), "2026-11-22T10:15:30Z");
        let t = t + chrono::Duration::microseconds(123_456);
        assert_eq!(datetime(t), "2026-11-22T10:15:30.123456Z");
    }

    #[test]
    fn reprs() {
        assert_eq!(py_list_repr(&["a", "b'c"]), "['a', \"b'c\"]");
        assert_eq!(py_repr("a\"'b"), "'a\"\\'b'");
    }
}
