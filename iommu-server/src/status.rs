//! The status page (word indices in `status_words.rs`, which the root task and the kernel
//! tests share): the server's side, writing it.

pub use crate::status_words::*;

/// The mapped status page, or nothing when the root task gave none.
pub struct StatusPage {
    words: Option<*mut u64>,
}

// SAFETY: the page is mapped for the lifetime of the process, in the one address space all its
// threads share; every access is a single volatile word access.
unsafe impl Send for StatusPage {}

impl StatusPage {
    pub const fn absent() -> Self {
        StatusPage { words: None }
    }

    /// # Safety
    /// `words` must point to a page mapped writable for the rest of the process's life.
    pub unsafe fn at(words: *mut u64) -> Self {
        StatusPage { words: Some(words) }
    }

    pub fn set(&self, index: usize, value: u64) {
        assert!(index < WORDS);
        if let Some(base) = self.words {
            // SAFETY: `index` is inside the page, which `at`'s contract keeps mapped.
            unsafe { core::ptr::write_volatile(base.add(index), value) };
        }
    }

    pub fn add(&self, index: usize, delta: u64) {
        assert!(index < WORDS);
        if let Some(base) = self.words {
            // SAFETY: as in `set`.
            unsafe {
                let old = core::ptr::read_volatile(base.add(index));
                core::ptr::write_volatile(base.add(index), old.wrapping_add(delta));
            }
        }
    }
}
