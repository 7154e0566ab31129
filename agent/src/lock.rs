//! The one poison-tolerant lock of the agent.
//!
//! A thread that panics while holding a `std::sync::Mutex` poisons it. Everything the agent keeps
//! behind a mutex (caches, counters, the last good reading) is valid after any partial update,
//! so a poisoned lock is taken anyway instead of turning one panic into a panic in every later
//! scrape. Reads no files and calls no library.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, taking the guard of a poisoned mutex as is.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_is_still_usable() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let panicked = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            *g = 2;
            panic!("poison it");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 3);
    }
}
