//! A per-key once-only guard: the first caller does the work, concurrent callers wait for it,
//! a success is remembered, a failure is forgotten so a later caller can retry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard};

enum State<T> {
    Running,
    Done(T),
}

pub struct OnceMap<K, T> {
    states: Mutex<HashMap<K, State<T>>>,
    changed: Condvar,
}

impl<K: Eq + Hash + Clone, T: Clone> Default for OnceMap<K, T> {
    fn default() -> Self {
        OnceMap {
            states: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone> OnceMap<K, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` keys from the start: a map that grows to hundreds of thousands of keys
    /// would otherwise hold its old and its new table at once while it grows.
    pub fn with_capacity(n: usize) -> Self {
        OnceMap {
            states: Mutex::new(HashMap::with_capacity(n)),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, State<T>>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered result for `key`, if the work for it has succeeded.
    pub fn get(&self, key: &K) -> Option<T> {
        match self.lock().get(key) {
            Some(State::Done(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Records a success without running anything (for example: found already present).
    pub fn set(&self, key: K, value: T) {
        self.lock().insert(key, State::Done(value));
        self.changed.notify_all();
    }

    /// Runs `work` for `key` unless it already succeeded or is running (then waits for it).
    /// Returns the value and whether this call did the work.
    pub fn run<E>(&self, key: &K, work: impl FnOnce() -> Result<T, E>) -> Result<(T, bool), E> {
        let mut states = self.lock();
        loop {
            match states.get(key) {
                Some(State::Done(v)) => return Ok((v.clone(), false)),
                Some(State::Running) => {
                    states = self.changed.wait(states).unwrap_or_else(|e| e.into_inner());
                }
                None => break,
            }
        }
        states.insert(key.clone(), State::Running);
        drop(states);
        let mut guard = Forget {
            map: self,
            key: Some(key.clone()),
        };
        let result = work();
        if let Ok(v) = &result {
            let key = guard.key.take().expect("key taken once");
            self.lock().insert(key, State::Done(v.clone()));
            self.changed.notify_all();
        }
        drop(guard);
        result.map(|v| (v, true))
    }
}

/// A number for each name (a destination repository), so maps keyed by (name, digest) over a
/// whole run hold a 36-byte key instead of a string each.
#[derive(Debug, Default)]
pub struct Ids {
    ids: Mutex<HashMap<String, u32>>,
}

impl Ids {
    pub fn of(&self, name: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = ids.get(name) {
            return id;
        }
        let id = u32::try_from(ids.len()).expect("fewer than 2^32 names");
        ids.insert(name.to_string(), id);
        id
    }
}

/// Clears a running entry when the work failed or panicked, and wakes the waiters.
struct Forget<'a, K: Eq + Hash + Clone, T: Clone> {
    map: &'a OnceMap<K, T>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone, T: Clone> Drop for Forget<'_, K, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.map.lock().remove(&key);
            self.map.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_one_success() {
        let once: OnceMap<u32, u32> = OnceMap::new();
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let (v, _) = once
                        .run(&1, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(30));
                            Ok::<_, ()>(7)
                        })
                        .unwrap();
                    assert_eq!(v, 7);
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(once.get(&1), Some(7));
    }

    #[test]
    fn a_failure_is_forgotten_so_the_next_caller_retries() {
        let once: OnceMap<u32, u32> = OnceMap::new();
        assert_eq!(once.run(&1, || Err::<u32, _>("boom")), Err("boom"));
        assert_eq!(once.get(&1), None);
        assert_eq!(once.run(&1, || Ok::<_, &str>(3)), Ok((3, true)));
        assert_eq!(once.run(&1, || Ok::<_, &str>(4)), Ok((3, false)));
    }
}
