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
/// Bytes of bodies kept at most (a body may be close to a megabyte); past it the cache
/// starts over.
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Rendered bodies by resource id, each with the version it was rendered from, bounded
/// in count and in bytes.
pub struct Bodies {
    cache: Mutex<Cache>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Uuid, (i64, Arc<RawValue>)>,
    bytes: usize,
}

impl Default for Bodies {
    fn default() -> Self {
        Self::bounded(MAX_ENTRIES, MAX_BYTES)
    }
}

impl Bodies {
    fn bounded(max_entries: usize, max_bytes: usize) -> Self {
        Bodies {
            cache: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    /// The body rendered of resource `id` at `version`, if there is one.
    pub fn known(&self, id: Uuid, version: DateTime<Utc>) -> Option<Arc<RawValue>> {
        let cache = self.cache.lock().ok()?;
        let (at, body) = cache.entries.get(&id)?;
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
        let size = body.get().len();
        if let Ok(mut cache) = self.cache.lock() {
            if let Some((_, old)) = cache.entries.remove(&id) {
                cache.bytes -= old.get().len();
            }
            if cache.entries.len() >= self.max_entries || cache.bytes + size > self.max_bytes {
                *cache = Cache::default();
            }
            if size <= self.max_bytes {
                cache.bytes += size;
                cache.entries.insert(id, (version, body.clone()));
            }
        }
        Ok(body)
    }

    /// Bodies and bytes held.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (cache.entries.len(), cache.bytes)
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

    #[test]
    fn bounded_in_count_and_in_bytes() {
        let t = Utc::now();
        // The audit's case: 60 bodies of 0.9 MB stayed held (about 54 MB of text).
        let big = "x".repeat(900_000);
        let bodies = Bodies::default();
        let mut most = 0;
        for _ in 0..60 {
            bodies.get(Uuid::new_v4(), t, || Ok(big.as_str())).unwrap();
            most = most.max(bodies.held().1);
        }
        assert!(most <= MAX_BYTES, "{most} bytes held");
        // Rendering one resource again replaces its bytes, it does not add to them.
        let bodies = Bodies::bounded(10, 100);
        let id = Uuid::new_v4();
        for n in 0..50 {
            let later = t + chrono::Duration::microseconds(n);
            bodies.get(id, later, || Ok("0123456789")).unwrap();
        }
        assert_eq!(bodies.held(), (1, 12));
        // Past the count, the cache starts over.
        let bodies = Bodies::bounded(10, 100);
        for _ in 0..10 {
            bodies.get(Uuid::new_v4(), t, || Ok(1)).unwrap();
        }
        assert_eq!(bodies.held().0, 10);
        bodies.get(Uuid::new_v4(), t, || Ok(1)).unwrap();
        assert_eq!(bodies.held(), (1, 1));
        // A body larger than the whole bound is served and not kept.
        let huge = "y".repeat(200);
        assert_eq!(
            bodies
                .get(Uuid::new_v4(), t, || Ok(huge.as_str()))
                .unwrap()
                .get()
                .len(),
            202
        );
        assert_eq!(bodies.held(), (0, 0));
    }
}
