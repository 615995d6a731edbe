//! The schedule in memory: when each message falls due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

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
}

impl Schedule {
    pub(super) fn clear(&mut self) {
        self.heap.clear();
        self.known.clear();
        self.ready.clear();
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
