//! The contract between the IOMMU server and whoever starts it: the root task, and the kernel's
//! IOMMU tests acting as one. Only constants, one definition for all three.
//!
//! * [`slots`]: which capability the starter puts into which slot of the server.
//! * [`layout`]: the server's address space (the kernel tests check where it maps client
//!   windows).
//! * [`status`]: the words of the status page through which the starter observes the server.
//! * [`start`]: the bits of the server's start argument.
//! * [`small_limits`]: the small per-client limits one of those bits selects.
//! * [`limits`]: per-client limits from the system description, and the rule that their
//!   memory budgets fit the server's heap.
#![no_std]

pub mod layout;
pub mod limits;
pub mod slots;
pub mod small_limits;
pub mod start;
pub mod status;
