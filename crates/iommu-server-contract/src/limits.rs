//! Per-client limits from the system description, and the rule that keeps them honest.
//!
//! The root task writes one entry per client connection (endpoint badge) into a page it gives
//! the server read-only ([`crate::slots::CLIENT_LIMITS`]); the server opens each client under
//! its entry, or under [`Limits::DEFAULT`] if the page or the entry is absent. Entry of badge `b`: words `b * WORDS_PER_CLIENT ..`, first
//! [`PRESENT`], then the six limits in the order of [`Limits`]' fields.
//!
//! Budgets are not overcommitted: the memory budgets of all clients plus the server's own
//! reserve must fit the server's heap ([`check_budgets`]), so that no client can use up heap
//! another was promised (docs/architecture.md, threat model). The byte counts are the
//! server's estimates of its heap use (`iommu_core::budget`).

use crate::{layout, slots};

/// How much of each resource one client connection may hold (`iommu_core::ClientLimits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Handles in the client's table (the table itself holds at most 65,535).
    pub handles: u64,
    /// Mapped areas in the IOASes the client owns.
    pub areas: u64,
    /// Allocated PASIDs.
    pub pasids: u64,
    /// Fault queues.
    pub fault_queues: u64,
    /// HWPTs, each a domain with its page tables.
    pub domains: u64,
    /// Estimated server heap, in bytes.
    pub memory_bytes: u64,
}

impl Limits {
    /// What a description that names none gives: a quarter of the heap each, so that two
    /// clients and the reserve fit.
    pub const DEFAULT: Limits = Limits { handles: 4096, areas: 16384, pasids: 256, fault_queues: 64, domains: 64, memory_bytes: 1 << 20 };

    /// The small limits ([`crate::small_limits`]).
    pub const SMALL: Limits = Limits {
        handles: crate::small_limits::HANDLES,
        areas: crate::small_limits::AREAS,
        pasids: crate::small_limits::PASIDS,
        fault_queues: crate::small_limits::FAULT_QUEUES,
        domains: crate::small_limits::DOMAINS,
        memory_bytes: crate::small_limits::MEMORY_BYTES,
    };

    /// The entry's words after [`PRESENT`].
    pub const fn to_words(&self) -> [u64; 6] {
        [self.handles, self.areas, self.pasids, self.fault_queues, self.domains, self.memory_bytes]
    }

    pub const fn from_words(words: [u64; 6]) -> Limits {
        let [handles, areas, pasids, fault_queues, domains, memory_bytes] = words;
        Limits { handles, areas, pasids, fault_queues, domains, memory_bytes }
    }
}

/// Words of one client's entry in the limits page.
pub const WORDS_PER_CLIENT: usize = 8;
/// The first word of an entry that holds limits (any other value: the defaults).
pub const PRESENT: u64 = 0x4c49_4d49_5453; // "LIMITS"
const _: () = assert!((slots::MAX_CLIENTS as usize + 1) * WORDS_PER_CLIENT <= layout::PAGE as usize / 8);

/// The server's heap.
pub const SERVER_HEAP_BYTES: u64 = layout::HEAP_PAGES * layout::PAGE;
/// What the server keeps for itself, charged to no client: its units' and devices' records,
/// the PCI topology, the table of pins, the fault drain buffer, the IPC buffers, and the
/// allocator's fragmentation (an estimate, like the clients' byte counts).
pub const SERVER_RESERVE_BYTES: u64 = 1 << 20;

/// One client connection's budget in a description.
#[derive(Clone, Copy)]
pub struct Budget {
    /// The driver holding the connection.
    pub client: &'static str,
    pub limits: Limits,
}

/// Why a description's budgets were refused: the client whose budget does not fit and the
/// resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub client: &'static str,
    pub resource: &'static str,
}

/// The most handles a client's table can hold.
pub const MAX_HANDLES: u64 = 65_535;

/// Whether `budgets` fit: each client's handles within what a table holds, and the memory
/// budgets, added in order to the server's reserve, within the heap. The first client that
/// does not fit is named, with the resource.
pub const fn check_budgets(budgets: &[Budget]) -> Result<(), Refusal> {
    let mut committed = SERVER_RESERVE_BYTES;
    let mut i = 0;
    while i < budgets.len() {
        let Budget { client, limits } = budgets[i];
        if limits.handles > MAX_HANDLES {
            return Err(Refusal { client, resource: "handles" });
        }
        committed = match committed.checked_add(limits.memory_bytes) {
            Some(total) if total <= SERVER_HEAP_BYTES => total,
            _ => return Err(Refusal { client, resource: "server memory" }),
        };
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(client: &'static str, memory_bytes: u64) -> Budget {
        Budget { client, limits: Limits { memory_bytes, ..Limits::DEFAULT } }
    }

    #[test]
    fn budgets_that_fit_the_heap_with_the_reserve_pass() {
        assert_eq!(check_budgets(&[]), Ok(()));
        assert_eq!(check_budgets(&[budget("a", Limits::DEFAULT.memory_bytes), budget("b", Limits::DEFAULT.memory_bytes)]), Ok(()), "the defaults for two drivers");
        // Exactly the heap less the reserve.
        let rest = SERVER_HEAP_BYTES - SERVER_RESERVE_BYTES;
        assert_eq!(check_budgets(&[budget("a", rest - 4096), budget("b", 4096)]), Ok(()));
    }

    #[test]
    fn the_first_client_past_the_heap_is_named_with_the_resource() {
        let rest = SERVER_HEAP_BYTES - SERVER_RESERVE_BYTES;
        let refused = check_budgets(&[budget("a", rest / 2), budget("b", rest / 2), budget("c", 1), budget("d", 1)]);
        assert_eq!(refused, Err(Refusal { client: "c", resource: "server memory" }), "one byte past the heap");
        // The old defaults (half the heap each) for two clients do not fit beside the reserve.
        assert_eq!(check_budgets(&[budget("a", 2 << 20), budget("b", 2 << 20)]), Err(Refusal { client: "b", resource: "server memory" }));
        // A budget so large the sum overflows is refused, not wrapped.
        assert_eq!(check_budgets(&[budget("a", u64::MAX)]), Err(Refusal { client: "a", resource: "server memory" }));
        let many_handles = Budget { client: "h", limits: Limits { handles: MAX_HANDLES + 1, ..Limits::SMALL } };
        assert_eq!(check_budgets(&[many_handles]), Err(Refusal { client: "h", resource: "handles" }));
    }

    #[test]
    fn an_entry_round_trips_through_its_words() {
        for limits in [Limits::DEFAULT, Limits::SMALL] {
            assert_eq!(Limits::from_words(limits.to_words()), limits);
        }
        assert_ne!(Limits::SMALL.to_words(), Limits::DEFAULT.to_words());
    }
}
