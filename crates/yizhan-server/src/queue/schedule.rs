//! The schedule in memory: when each message falls due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use yizhan_spool::{Envelope, QueueId};

/// The runner's schedule in memory: when each known message not in flight falls due, and
/// the messages ready to start. Rebuilt from the spool at start, on a wake-up and
/// periodically; in between it learns from submitted messages and finished tasks.
#[derive(Default)]
pub(super) struct Schedule {
    /// (due, id), earliest first; an entry is current only if `known` has the same time.
    pub(super) heap: BinaryHeap<Reverse<(i64, QueueId)>>,
    pub(super) known: HashMap<QueueId, i64>,
    /// Envelopes to start as they are, in order.
    pub(super) ready: VecDeque<Envelope>,
    /// Messages waiting for a destination's permit; kept when the rest is rebuilt.
    pub(super) parked: Parked,
}

/// Messages waiting for a permit of a destination (see `destination`), by destination key,
/// first parked first woken.
#[derive(Default)]
pub(super) struct Parked {
    by_key: HashMap<String, VecDeque<QueueId>>,
    ids: HashSet<QueueId>,
}

impl Parked {
    /// Parks `id` until one of `keys` has room.
    pub(super) fn park(&mut self, id: QueueId, keys: Vec<String>) {
        for key in keys {
            self.by_key.entry(key).or_default().push_back(id.clone());
        }
        self.ids.insert(id);
    }

    /// Whether `id` is parked.
    pub(super) fn contains(&self, id: &QueueId) -> bool {
        self.ids.contains(id)
    }

    /// How many messages are parked.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Unparks up to `room` messages parked on `key`, first parked first.
    pub(super) fn wake(&mut self, key: &str, room: usize) -> Vec<QueueId> {
        let mut woken = Vec::new();
        let Some(queue) = self.by_key.get_mut(key) else {
            return woken;
        };
        while woken.len() < room {
            let Some(id) = queue.pop_front() else {
                break;
            };
            // Entries of a message already woken through another destination are stale.
            if self.ids.remove(&id) {
                woken.push(id);
            }
        }
        if queue.is_empty() {
            self.by_key.remove(key);
        }
        woken
    }
}

impl Schedule {
    /// Forgets what is due (not what is parked).
    pub(super) fn clear(&mut self) {
        self.heap.clear();
        self.known.clear();
        self.ready.clear();
    }

    /// Forgets `id` (held or deleted): not due, not ready. A parked entry stays; when woken,
    /// the message is read again and found held or gone.
    pub(super) fn forget(&mut self, id: &QueueId) {
        self.known.remove(id);
        self.ready.retain(|envelope| envelope.id != *id);
    }

    /// Schedules `id` at `due` (replacing any earlier time).
    pub(super) fn at(&mut self, id: QueueId, due: i64) {
        self.known.insert(id.clone(), due);
        self.heap.push(Reverse((due, id)));
        // Stale entries pile up only if messages are rescheduled without coming due.
        if self.heap.len() > 2 * self.known.len() + 1024 {
            self.heap = self
                .known
                .iter()
                .map(|(id, due)| Reverse((*due, id.clone())))
                .collect();
        }
    }

    pub(super) fn is_current(&self, due: i64, id: &QueueId) -> bool {
        self.known.get(id) == Some(&due)
    }

    /// Takes the earliest message due at `now`, if any.
    pub(super) fn pop_due(&mut self, now: i64) -> Option<QueueId> {
        while let Some(Reverse((due, id))) = self.heap.peek() {
            if !self.is_current(*due, id) {
                self.heap.pop();
                continue;
            }
            if *due > now {
                return None;
            }
            let Reverse((_, id)) = self.heap.pop()?;
            self.known.remove(&id);
            return Some(id);
        }
        None
    }

    /// When the earliest known message falls due.
    pub(super) fn next(&mut self) -> Option<i64> {
        while let Some(Reverse((due, id))) = self.heap.peek() {
            if self.is_current(*due, id) {
                return Some(*due);
            }
            self.heap.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> QueueId {
        format!("{n:032x}").parse().unwrap()
    }

    #[test]
    fn parked_messages_wake_in_order_once_each_and_only_with_room() {
        let mut parked = Parked::default();
        parked.park(id(1), vec!["mx:a".into()]);
        parked.park(id(2), vec!["mx:a".into(), "mx:b".into()]);
        parked.park(id(3), vec!["mx:a".into()]);
        assert_eq!(parked.len(), 3);
        assert!(parked.wake("mx:a", 0).is_empty());
        assert_eq!(parked.wake("mx:b", 5), vec![id(2)]);
        // 2 was woken through mx:b: its entry under mx:a is skipped.
        assert_eq!(parked.wake("mx:a", 1), vec![id(1)]);
        assert_eq!(parked.wake("mx:a", 5), vec![id(3)]);
        assert_eq!(parked.len(), 0);
        assert!(!parked.contains(&id(2)));
        assert!(parked.wake("mx:c", 5).is_empty());
    }
}
