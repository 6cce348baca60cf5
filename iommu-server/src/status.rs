//! The status page (word indices in `iommu_server_contract::status`, which the root task and
//! the kernel tests share): the server's side, writing it.

use hwio::SharedWords;

pub use iommu_server_contract::status::*;

/// The mapped status page, or nothing when the root task gave none. The root task and the
/// kernel's tests read it while the server runs.
pub struct StatusPage {
    words: Option<SharedWords<WORDS>>,
}

impl StatusPage {
    pub const fn absent() -> Self {
        StatusPage { words: None }
    }

    /// # Safety
    /// `words` must point to a page mapped writable for the rest of the process's life.
    pub unsafe fn at(words: *mut u64) -> Self {
        // SAFETY: the caller's contract; a page holds the `WORDS` words.
        StatusPage { words: Some(unsafe { SharedWords::at_address(words as usize) }) }
    }

    pub fn set(&self, index: usize, value: u64) {
        assert!(index < WORDS);
        if let Some(words) = &self.words {
            words.write(index, value);
        }
    }

    pub fn add(&self, index: usize, delta: u64) {
        assert!(index < WORDS);
        if let Some(words) = &self.words {
            words.add(index, delta);
        }
    }
}
