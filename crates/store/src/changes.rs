//! Wake-ups for long-polls. Each listener has a watch channel carrying its newest known
//! generation; a write that bumps a generation announces it here after its commit
//! (SQLite, in process) or through PostgreSQL `NOTIFY` (every replica). Only the pollers
//! of the listeners whose generation moved wake. Agent Auth sign-ins use the same
//! channels, by their own id, moving to 1 when they finish.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Default)]
pub struct Changes {
    listeners: Mutex<HashMap<Uuid, watch::Sender<i64>>>,
}

impl Changes {
    /// A receiver that changes when the listener's generation moves past what it was.
    pub fn subscribe(&self, listener: Uuid) -> watch::Receiver<i64> {
        let mut map = self.lock();
        map.entry(listener)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Announces that `listener` reached `generation`; channels nobody waits on go.
    pub fn bump(&self, listener: Uuid, generation: i64) {
        let mut map = self.lock();
        if let Some(tx) = map.get(&listener) {
            if tx.receiver_count() == 0 {
                map.remove(&listener);
            } else {
                tx.send_if_modified(|g| {
                    let moved = generation > *g;
                    *g = (*g).max(generation);
                    moved
                });
            }
        }
    }

    /// Wakes every poller (after missed notifications, or at shutdown); each reads the
    /// state again.
    pub fn wake_all(&self) {
        let mut map = self.lock();
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_modify(|_| {});
        }
    }

    /// How many listeners have a poller waiting.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock()
            .values()
            .filter(|tx| tx.receiver_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<i64>>> {
        // A poisoned map is still a valid map: the worst case is a spurious wake-up.
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_moved_listener_wakes() {
        let changes = Changes::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut ra = changes.subscribe(a);
        let rb = changes.subscribe(b);
        changes.bump(a, 3);
        assert!(ra.has_changed().unwrap_or(false));
        assert!(!rb.has_changed().unwrap_or(true));
        assert_eq!(*ra.borrow_and_update(), 3);
        // An older generation (a late notification) does not wake anyone.
        changes.bump(a, 2);
        assert!(!ra.has_changed().unwrap_or(true));
        changes.wake_all();
        assert!(rb.has_changed().unwrap_or(false));
        drop((ra, rb));
        changes.bump(a, 4);
        changes.wake_all();
        assert_eq!(changes.watched(), 0);
    }
}
