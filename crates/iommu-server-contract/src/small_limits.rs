//! Small per-client limits, which a client's entry in the client limits page can give
//! ([`crate::limits::Limits::SMALL`]) instead of the defaults (which allow
//! thousands of handles and areas): with them a test exhausts every limit in a few dozen
//! requests, fast under TCG. A driver that binds a device and allocates an IOAS, a fault queue
//! and an HWPT and maps a few pages stays well inside them.

/// Handles in a client's table.
pub const HANDLES: u64 = 16;
/// Mapped areas in the IOASes a client owns.
pub const AREAS: u64 = 8;
/// Allocated PASIDs.
pub const PASIDS: u64 = 4;
/// Fault queues.
pub const FAULT_QUEUES: u64 = 2;
/// HWPTs, each a domain with its own page tables.
pub const DOMAINS: u64 = 2;
/// Estimated server heap, in bytes: room for all of the above at once (about 4 KiB), but
/// not for the areas' frame lists if each area spans a few hundred pages (8 bytes a page).
pub const MEMORY_BYTES: u64 = 8192;
