//! Replays documents whose fate under CPython's `json.loads` was recorded by
//! `tools/gen-json-cases.py`: same acceptance, same message, same character offset.

use hostplane_compat::json::{parse, JsonError};

#[test]
fn parser_agrees_with_cpython() {
    let text = include_str!("fixtures/json_cases.jsonl");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        let doc = case["doc"].as_str().expect("doc");
        let got = match parse(doc) {
            Ok(_) => (true, None, None),
            Err(JsonError::Syntax { msg, pos }) => (false, Some(msg.to_owned()), Some(pos as u64)),
            Err(JsonError::Unparseable) => (false, Some("unparseable".into()), None),
        };
        let want = (
            case["ok"].as_bool().expect("ok"),
            case["msg"].as_str().map(str::to_owned),
            case["pos"].as_u64(),
        );
        count += 1;
        if got != want {
            failures.push(format!("{doc:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(count > 1000, "fixture too small: {count}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
