//! Values a thread keeps from one inspection to the next (vectors with their capacity), so
//! that an inspection does not allocate and grow them from nothing.

use std::cell::RefCell;
use std::thread::LocalKey;

/// This thread's value in `slot`, leaving the default in its place; the default when the
/// thread is ending or the value is already taken (an inspection inside another).
pub(crate) fn take<T: Default>(slot: &'static LocalKey<RefCell<T>>) -> T {
    slot.try_with(|s| {
        s.try_borrow_mut()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// Keeps `value` in `slot` for the next use on this thread; drops it when the thread is ending
/// or the slot is in use.
pub(crate) fn keep<T>(slot: &'static LocalKey<RefCell<T>>, value: T) {
    let _ = slot.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = value;
        }
    });
}

/// Empties `v` to keep it, or frees it when it grew beyond `max` elements.
pub(crate) fn emptied<T>(v: &mut Vec<T>, max: usize) {
    if v.capacity() > max {
        *v = Vec::new();
    } else {
        v.clear();
    }
}
