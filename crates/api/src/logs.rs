//! Deploy and build logs, as the official CLI reads them (routes the reference leaves
//! out): `POST /v1/projects/{deployment_id}/deploy_logs` and the per-revision
//! `deploy_logs` / `build_logs`. The lines are what listener agents sent (`POST
//! /dataplane/v1/listeners/{id}/logs`) plus one line per status they reported.
//!
//! Body `{limit, order, offset, level, query, start_time, end_time}`, all optional;
//! answer `{"logs": [{"id", "timestamp", "level", "message"}], "next_offset"}`, with
//! `timestamp` in epoch milliseconds. `next_offset` is a cursor just past the last line
//! returned (in the page's order): passing it back gives the lines after it, so a
//! client that keeps the last cursor it got, as the CLI does, never sees a line twice.
//! With no line returned, it is the cursor that was sent (or `null`).

use crate::error::{json_response, ApiError, ApiResult};
use crate::request::BodyCall;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use compat::validate::{self, Fields};
use compat::{ErrorItem, Loc};
use serde::Serialize;
use store::LogQuery;

/// Most lines one page returns.
const MAX_LIMIT: i64 = 1000;

struct LogRequest {
    limit: i64,
    descending: bool,
    offset: Option<String>,
    level: Option<String>,
    query: Option<String>,
    start_time: Option<chrono::DateTime<chrono::Utc>>,
    end_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogRequest {
    fn validate(m: &mut Fields<'_>) -> Option<Self> {
        let limit = m.optional("limit", |v, l, e| {
            validate::int(v, l, e, Some(1), Some(MAX_LIMIT))
        });
        let order = m.optional("order", |v, l, e| {
            validate::literal(v, l, e, &["asc", "desc"])
        });
        let offset = m.optional("offset", validate::string);
        let level = m.optional("level", validate::string);
        let query = m.optional("query", validate::string);
        let start_time = m.optional("start_time", validate::datetime);
        let end_time = m.optional("end_time", validate::datetime);
        Some(LogRequest {
            limit: limit?.map_or(100, |n| n as i64),
            descending: order?.is_none_or(|o| o == "desc"),
            offset: offset?,
            level: level?,
            query: query?,
            start_time: start_time?,
            end_time: end_time?,
        })
    }
}

#[derive(Serialize)]
struct LogLineOut {
    id: String,
    timestamp: i64,
    level: String,
    message: String,
}

#[derive(Serialize)]
struct LogPage {
    logs: Vec<LogLineOut>,
    next_offset: Option<String>,
}

/// A cursor: `<microseconds>-<sequence>` of a line.
pub(crate) fn cursor_text((at, seq): (i64, i64)) -> String {
    format!("{at}-{seq}")
}

pub(crate) fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (at, seq) = text.split_once('-')?;
    Some((at.parse().ok()?, seq.parse().ok()?))
}

async fn read(
    app: &AppState,
    call: &BodyCall,
    kind: &'static str,
    by_revision: bool,
) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let deployment_id = call.path_uuid("deployment_id", &mut errs);
    let revision_id = if by_revision {
        call.path_uuid("revision_id", &mut errs).map(Some)
    } else {
        Some(None)
    };
    // The CLI always sends a body; an absent one means every default.
    let empty = compat::Value::Object(Default::default());
    let body = match &call.body {
        compat::body::Body::Missing => &empty,
        compat::body::Body::Present(v) => v,
    };
    let req = validate::model(body, Loc::new("body"), &mut errs)
        .and_then(|mut m| LogRequest::validate(&mut m));
    ApiError::check(errs)?;
    let (Some(deployment_id), Some(revision_id), Some(req)) = (deployment_id, revision_id, req)
    else {
        return Err(ApiError::Internal(
            "validation gave no value and no error".into(),
        ));
    };
    let cursor = match &req.offset {
        None => None,
        Some(text) => Some(parse_cursor(text).ok_or_else(|| {
            ApiError::Validation(vec![ErrorItem::new(
                "value_error",
                Loc::new("body").key("offset"),
                "Value error, not a cursor this server returned",
                compat::Value::Str(text.clone()),
            )
            .with_ctx(serde_json::json!({ "error": {} }))])
        })?),
    };
    let query = LogQuery {
        deployment_id,
        revision_id,
        kind,
        descending: req.descending,
        cursor,
        level: req.level.map(|l| l.to_uppercase()),
        contains: req.query.filter(|q| !q.is_empty()),
        since: req.start_time,
        until: req.end_time,
        limit: req.limit,
    };
    let lines = crate::operations::deployments::logs(app, &call.tenant, &query).await?;
    let next_offset = lines
        .last()
        .map(|l| cursor_text((l.at.timestamp_micros(), l.seq)))
        .or(req.offset);
    let logs = lines
        .into_iter()
        .map(|l| LogLineOut {
            id: l.seq.to_string(),
            timestamp: l.at.timestamp_millis(),
            level: l.level,
            message: l.message,
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &LogPage { logs, next_offset },
    ))
}

pub async fn deploy_logs(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    read(&app, &call, "deploy", false).await
}

pub async fn revision_deploy_logs(
    State(app): State<AppState>,
    call: BodyCall,
) -> ApiResult<Response> {
    read(&app, &call, "deploy", true).await
}

pub async fn revision_build_logs(
    State(app): State<AppState>,
    call: BodyCall,
) -> ApiResult<Response> {
    read(&app, &call, "build", true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(
            parse_cursor(&cursor_text((1_700_000_000_000_000, 42))),
            Some((1_700_000_000_000_000, 42))
        );
        assert_eq!(parse_cursor("12"), None);
        assert_eq!(parse_cursor("a-1"), None);
    }
}
