//! Rendered JSON bodies of listeners and deployments, remembered by id and version.
//!
//! The version is the row's `updated_at`, which every write that changes what the body
//! shows moves forward (by at least one microsecond) in the same transaction, so a body is
//! reused only for the exact state it was rendered from. A get or a list still asks the
//! database for the current version of every resource it answers with, so it sees every
//! write acknowledged before it on any replica; what it skips when the version is one
//! already rendered is reading the rest of the row, decoding it and encoding the JSON.
//! Bodies are exactly the bytes the renderer produced.

use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Bodies kept at most; past it the cache starts over.
const MAX_ENTRIES: usize = 20_000;

/// Rendered bodies by resource id, each with the version it was rendered from.
#[derive(Default)]
pub struct Bodies {
    entries: Mutex<HashMap<Uuid, (i64, Arc<RawValue>)>>,
}

impl Bodies {
    /// The body rendered of resource `id` at `version`, if there is one.
    pub fn known(&self, id: Uuid, version: DateTime<Utc>) -> Option<Arc<RawValue>> {
        let entries = self.entries.lock().ok()?;
        let (at, body) = entries.get(&id)?;
        (*at == version.timestamp_micros()).then(|| body.clone())
    }

    /// The body of resource `id` at `version`: remembered, or rendered by `render` now.
    pub fn get<T: Serialize>(
        &self,
        id: Uuid,
        version: DateTime<Utc>,
        render: impl FnOnce() -> ApiResult<T>,
    ) -> ApiResult<Arc<RawValue>> {
        if let Some(body) = self.known(id, version) {
            return Ok(body);
        }
        let version = version.timestamp_micros();
        let body: Arc<RawValue> = serde_json::value::to_raw_value(&render()?)
            .map_err(|e| ApiError::Internal(format!("rendering a body: {e}")))?
            .into();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(id, (version, body.clone()));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_renders_again() {
        let bodies = Bodies::default();
        let id = Uuid::new_v4();
        let t = Utc::now();
        let first = bodies.get(id, t, || Ok(1)).unwrap();
        let same = bodies
            .get(id, t, || -> ApiResult<i32> { panic!("rendered twice") })
            .unwrap();
        assert_eq!((first.get(), same.get()), ("1", "1"));
        assert_eq!(
            bodies.known(id, t).map(|b| b.get().to_owned()),
            Some("1".into())
        );
        let later = t + chrono::Duration::microseconds(1);
        assert_eq!(bodies.get(id, later, || Ok(2)).unwrap().get(), "2");
        assert_eq!(
            bodies.get(Uuid::new_v4(), later, || Ok(3)).unwrap().get(),
            "3"
        );
    }
}
