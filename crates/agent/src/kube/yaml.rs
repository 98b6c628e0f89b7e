//! A small, deterministic YAML writer for JSON values: block style, keys in the order
//! the value holds them, every string double-quoted with JSON escapes (valid YAML, so no
//! value can be mistaken for a number, a boolean or a document marker).

use serde_json::Value;
use std::fmt::Write;

/// The YAML text of `value` (a mapping or a sequence at the top), ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if plain {
        k.to_owned()
    } else {
        scalar(&Value::String(k.to_owned()))
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        // JSON's string, number, boolean and null are YAML's too.
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        let pad = " ".repeat(indent);
        if is_block(v) {
            let _ = writeln!(out, "{pad}{}:", key(k));
            match v {
                Value::Object(inner) => mapping(out, inner, indent + 2),
                Value::Array(items) => sequence(out, items, indent),
                _ => {}
            }
        } else {
            let _ = writeln!(out, "{pad}{}: {}", key(k), scalar(v));
        }
    }
}

/// A sequence; items of a mapping's sequence sit at the mapping's indentation.
fn sequence(out: &mut String, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(m) if !m.is_empty() => {
                // The first key goes on the dash's line.
                let mut first = String::new();
                mapping(&mut first, m, indent + 2);
                let rest = first.trim_start_matches(' ');
                let _ = write!(out, "{pad}- {rest}");
            }
            Value::Array(a) if !a.is_empty() => {
                let _ = writeln!(out, "{pad}-");
                sequence(out, a, indent + 2);
            }
            other => {
                let _ = writeln!(out, "{pad}- {}", scalar(other));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_and_quoting() {
        let v = json!({
            "apiVersion": "v1",
            "metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "a", "x y": "1"}},
            "spec": {
                "replicas": 2,
                "empty": {},
                "none": [],
                "ports": [{"name": "http", "port": 8000}, {"name": "b", "port": 1}],
                "args": ["--x", "yes", "0123"],
                "nested": [[1, 2]],
                "flag": true,
                "missing": null,
            }
        });
        let want = "apiVersion: \"v1\"\n\
metadata:\n  name: \"a\"\n  labels:\n    app.kubernetes.io/name: \"a\"\n    \"x y\": \"1\"\n\
spec:\n  replicas: 2\n  empty: {}\n  none: []\n  ports:\n  - name: \"http\"\n    port: 8000\n  \
- name: \"b\"\n    port: 1\n  args:\n  - \"--x\"\n  - \"yes\"\n  - \"0123\"\n  nested:\n  -\n    - 1\n    - 2\n  \
flag: true\n  missing: null\n";
        assert_eq!(to_yaml(&v), want);
    }
}
