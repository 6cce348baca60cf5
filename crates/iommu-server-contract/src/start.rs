//! The server's start argument: bits the starter sets (the root task from the system
//! description, `user/root/src/system.rs`, or a kernel test).

/// Run the in-server benchmark after bring-up.
pub const BENCH: u64 = 1 << 0;
/// arm: SMMU domains are stage-2 tables (VMID, VTTBR in the STE) rather than stage-1 (ASID,
/// TTB0 in a context descriptor).
pub const STAGE2: u64 = 1 << 1;
/// arm with GICv2m: map the GICv2m doorbell into every paging domain, so attached devices can
/// raise MSIs. GICv2m cannot tell devices apart, so each of them can then raise any other
/// device's MSI: a system description must ask for it knowingly (as Linux's
/// `allow_unsafe_interrupts`). Without it the doorbell stays unmapped and MSIs of attached
/// devices fault.
pub const ALLOW_UNISOLATED_MSI: u64 = 1 << 2;
// Bit 3 chose small limits for every client; a client's limits are now its entry in the
// client limits page ([`crate::limits`]), `Limits::SMALL` among them.
/// This instance replaces a server that ended: a client that did not connect to it yet gets
/// `kernel_ipc::STATUS_SERVER_RESTARTED` instead of `STATUS_NOT_CONNECTED`, so it learns
/// that its connection, handles and device setup are gone and must be rebuilt.
pub const RESTARTED: u64 = 1 << 4;
