//! The contract between the edu driver and whoever starts it (the root task, the kernel's IOMMU
//! tests in `kernel/src/tests_iommu.rs`): scenario numbers (the start argument's low byte), the
//! capability slots the starter fills, and the words of the report page.
#![no_std]

/// Scenarios.
pub mod scenario {
    /// Bind, attach, map, DMA RAM → device → RAM, unmap, DMA again and see the fault.
    pub const DMA: u64 = 1;
    /// Requests a hostile driver could make, over two client connections.
    pub const HOSTILE: u64 = 2;
    /// Bind, attach, map 16 pages, then spin until killed.
    pub const HOLD: u64 = 3;
    /// Map/unmap costs through IPC, then one fault delivered through a fault subscription
    /// (the instruction counter when the driver held the record goes to the report page).
    pub const BENCH: u64 = 4;
    /// Both edu devices in one IOAS (one shared HWPT, then one HWPT each): one map serves the
    /// DMA of both; after the unmap both fault.
    pub const TWO_DEVICES_ONE_IOAS: u64 = 5;
    /// Each edu device in its own IOAS, the same IOVAs mapped to different memory in each.
    pub const TWO_DEVICES_TWO_IOAS: u64 = 6;
    /// A device moved with `device_replace` from an HWPT of one IOAS to one of another.
    pub const REPLACE: u64 = 7;
    /// One thread maps and unmaps in a loop while the other destroys the IOAS and its HWPT;
    /// then waits, holding its device and fault queue, to be killed.
    pub const DESTROY_RACES_MAP: u64 = 8;
    /// A bounded stream of random requests (seed in the start argument's bits 8..64) while
    /// the device DMAs at random IOVAs; every reply must be success or a defined error.
    pub const HOSTILE_STREAM: u64 = 9;
    /// Rounds of map, copy through the device, check every byte, unmap; no fault allowed.
    pub const DMA_ROUNDS: u64 = 10;
    /// Revokes and deletes the message window the server lent, before, during (from a second
    /// thread) and after requests, over three connections; the server must answer throughout.
    pub const WINDOW_TAKEN: u64 = 11;
    /// x86: two clients, a victim with its MSI on the first device and the owner of a hostile
    /// second device; once both are set up (`report::FORGERY_TARGETS_READY`) the root task
    /// makes the hostile device send forged interrupt requests (indices `FORGERY_INDICES`):
    /// each must be refused and reported to the hostile device's fault queue; then both
    /// devices' own MSIs still arrive.
    #[cfg(target_arch = "x86_64")]
    pub const FORGED_INTERRUPTS: u64 = 12;
    /// Revokes the capability of memory it mapped (the server removes the mappings, the
    /// device's next write there faults; the root task checks the freed frames with canaries
    /// between `report::MEMORY_REVOKED` and its `report::RETRY_DMA` command), then its device
    /// capability (the server blocks and unbinds the device).
    pub const REVOKED_MEMORY_AND_DEVICE: u64 = 13;
    /// Against a server started with small limits: exhausts, one after another, its fault
    /// queues, HWPTs, PASIDs, mapped areas (one page each, scattered so each needs its own
    /// page tables; then unmapped), handles and estimated server memory (areas of a few
    /// hundred pages), each until `NoResources` (any other answer fails), keeping all but the
    /// areas; reports the counts (`report::LIMIT_COUNTS`), sets `report::AT_LIMITS` and waits,
    /// at its limits, for `report::LEAVE` in `COMMAND`; then exits holding everything.
    pub const LIMITS_EXHAUSTED: u64 = 14;
    /// arm: the device's MSI through `msi_alloc` (GICv3 ITS): takes its DMA-done interrupt
    /// through it, then destroys the device (the server unmaps its events in the ITS) and
    /// sets `report::DEVICE_GONE`. Without an ITS the server refuses `msi_alloc` with
    /// NotSupported and the driver exits with `MSIS_REFUSED`.
    #[cfg(target_arch = "aarch64")]
    pub const ITS_MSI: u64 = 17;
    /// arm: like FORGED_INTERRUPTS over the ITS. Victim (first device) and hostile device
    /// (second, with a fault queue) each get their MSI; at `report::FORGERY_TARGETS_READY`
    /// the root task makes the hostile device write forged MSIs: EventIDs it was not given,
    /// another device's EventID (which, from its DeviceID, is its own), an address in the
    /// doorbell page that is not GITS_TRANSLATER (none of them may raise anything but the
    /// hostile device's own LPI), and `FORGED_ADDRESSES` outside the doorbell page, each of
    /// which must fault into the hostile device's queue (the driver reads those records in
    /// order). Then both devices' own MSIs still arrive.
    #[cfg(target_arch = "aarch64")]
    pub const FORGED_ITS_MSIS: u64 = 18;
    /// Binds another process's address space (`sva::ADDRESS_SPACE_SLOT`) to the device with
    /// `sva_bind` at its untagged slot, with a fault queue: see [`crate::sva`].
    pub const SVA_BOUND_PROCESS: u64 = 19;
    /// Binds another process's address space as SVA_BOUND_PROCESS does; the process then takes
    /// write permission away from a page the device wrote: see [`crate::sva_protect`].
    pub const SVA_PROTECTED_PAGE: u64 = 29;
    /// No device and no server: the driver maps its report page writable at
    /// `sva_protect::OWN_PAGE_VA` and
    /// makes it read-only with `mem_protect`, which, its address space being watched, waits
    /// for the acknowledgement; it exits with 0 (done), `sva_protect::UNCONFIRMED` (PeerGone)
    /// or `sva_protect::REFUSED`.
    pub const SVA_PROTECT_WAITS: u64 = 30;
    /// On a unit whose walks set dirty bits: with dirty tracking on, the device reads one
    /// page and writes others; the bitmap of a whole GiB, read in one request, names exactly
    /// the written pages; a second read is empty; a write after the read is reported again.
    pub const DIRTY_TRACKING: u64 = 21;
    /// On a unit without dirty bits: `get_info` says so and dirty tracking is refused.
    pub const DIRTY_UNSUPPORTED: u64 = 22;
    /// Start-argument bit of DIRTY_TRACKING: after the checks, time reading the GiB's bitmap
    /// (three pages dirty each time) and print the figure as a `bench:` line.
    pub const DIRTY_BENCH: u64 = 1 << 8;
    /// Bind, attach, map two pages (the second writable at `RESTART_IOVA`), copy one to the
    /// other through the device and check it; report `report::RESTART_MAPPED` and wait, with
    /// the device attached and the mapping live, while the root task kills the server, starts
    /// a new one and attacks through the device at the old IOVA. On `report::RECONNECT` in
    /// `COMMAND`: the next request must fail with `ServerRestarted`; then reconnect, set the
    /// device up again and copy through it again (`report::RESTART_RECONNECTED`).
    pub const SERVER_RESTART: u64 = 15;
    /// SERVER_RESTART: the IOVA of the page the device may write.
    pub const RESTART_IOVA: u64 = 0x2000_0000;
    /// arm (SMMUv3): the driver builds its own context descriptor and stage-1 tables in
    /// memory it maps into a stage-2 nest parent and attaches its device to a nested HWPT over
    /// it: a copy follows stage 1 then stage 2 (every byte checked); a stage-1 entry changed
    /// and invalidated with `hwpt_invalidate` moves the DMA; a stage-1 and a stage-2 fault
    /// reach its fault queue with their stage; hostile requests (a CD the parent does not map,
    /// malformed invalidation entries, an invalidation of the parent) are refused.
    #[cfg(target_arch = "aarch64")]
    pub const NESTED_STAGE1: u64 = 23;
    /// The first of two owners of one device, one after the other: bind, attach, copy a page
    /// through the device (checked), take the device's MSI with `msi_alloc`, report
    /// `report::RESET_OWNER_SET_UP` and wait for `report::LEAVE` in `COMMAND`; then exit
    /// holding everything, for the server to take the device back (and reset it).
    pub const RESET_FIRST_OWNER: u64 = 25;
    /// Start-argument bit of RESET_FIRST_OWNER: the device is not an edu; only bind it, report
    /// `report::RESET_OWNER_SET_UP`, wait for `report::LEAVE` and exit holding it.
    pub const RESET_BIND_ONLY: u64 = 1 << 8;
    /// The next owner of that device: the device answers at its BAR, binds, copies a page
    /// (checked) and takes its MSI, whose DMA-done interrupt arrives: the server restored what
    /// the reset cleared and programs the MSI anew.
    pub const RESET_NEXT_OWNER: u64 = 26;
    /// A device detached from its HWPT (the IOAS still mapping its pages) and attached again:
    /// see [`crate::detach`].
    pub const DETACH_STOPS_DMA: u64 = 27;
}

/// SVA_BOUND_PROCESS. The driver binds the process and copies `SOURCE_VA` to `DESTINATION_VA`
/// through the device with no `ioas_map`, reports `COPIED` and waits for `RETRY_DMA` (the
/// starter checks the copy from the process's side, has the process unmap `DESTINATION_VA`,
/// and fills the frame with canaries once it is free); the device's write there must fault into
/// the bind's queue, and so must a write to `KERNEL_VA`; the device reads `MARKER_VA`; the driver
/// reports `FAULTED` and waits for `PROCESS_ENDED` (the starter ends the process and waits
/// until the server released it); then the binding must be gone (`sva_unbind` answers `NotAttached`) and the driver has the device
/// write the marker's bytes to `SOURCE_VA`, which the blocked device must not reach, and
/// reports `WRITTEN_AFTER_END`.
/// The firmware-required identity map of the RMRR/RMR tests (`kernel/src/tests_rmrr.rs`): the
/// override DMAR or IORT `tools/fw-override` builds gives the first edu device this region,
/// which it must reach at IOVA == physical address from takeover on.
pub mod direct {
    /// Scenario: with the device attached, its region is reserved in `ioas_iova_ranges`, a map
    /// over it is refused, and the device reads and writes it; again after a replace.
    pub const SCENARIO: u64 = 31;
    /// The region on each machine (physical, 64 KiB near the top of `-m 1G`'s RAM, kept from
    /// every other use by the test while its server runs; IORT RMR ranges must be 64 KiB
    /// aligned and sized): the host tool builds the tables for either architecture, so both
    /// are here.
    pub const REGION_X86_64: u64 = 0x3e00_0000;
    pub const REGION_AARCH64: u64 = 0x7e00_0000;
    #[cfg(target_arch = "x86_64")]
    pub const REGION: u64 = REGION_X86_64;
    #[cfg(target_arch = "aarch64")]
    pub const REGION: u64 = REGION_AARCH64;
    pub const REGION_PAGES: u64 = 16;
    /// The device the region belongs to: the first edu device qemu-run.sh adds (q35 00:02.0,
    /// virt 00:01.0; on virt its StreamID is its requester ID).
    pub const DEVICE_X86_64: (u8, u8, u8) = (0, 2, 0);
    pub const DEVICE_AARCH64: (u8, u8, u8) = (0, 1, 0);
    /// Byte `i` of the region's first page, which the test writes before the server starts.
    pub fn first_page_byte(i: usize) -> u8 {
        (i as u8).wrapping_mul(7).wrapping_add(0x31)
    }
    /// Byte `i` the driver writes into the region's second page while attached, and after the
    /// replace.
    pub fn attached_byte(i: usize) -> u8 {
        (i as u8).wrapping_mul(13).wrapping_add(0x5a)
    }
    pub fn replaced_byte(i: usize) -> u8 {
        (i as u8).wrapping_mul(3).wrapping_add(0xc4)
    }
}

pub mod sva {
    /// The slot of the address-space capability (CONTROL, GRANT, DERIVE) the starter fills.
    pub const ADDRESS_SPACE_SLOT: u64 = 40;
    /// Pages of the bound process.
    pub const SOURCE_VA: u64 = 0x5000_0000;
    pub const DESTINATION_VA: u64 = 0x5000_1000;
    /// A page the device reads before the process ends, so that its last write (of that
    /// page's bytes) would show in the source page.
    pub const MARKER_VA: u64 = 0x5000_2000;
    /// A kernel address (the direct map, the same on both architectures).
    pub const KERNEL_VA: u64 = 0xFFFF_8000_4000_0000;
    /// Phases in `report::PHASE`.
    pub const COPIED: u64 = 19;
    pub const FAULTED: u64 = 20;
    pub const WRITTEN_AFTER_END: u64 = 21;
    /// Commands in `report::COMMAND`.
    pub const RETRY_DMA: u64 = 19;
    pub const PROCESS_ENDED: u64 = 20;
    /// The byte the starter fills the marker page with.
    pub const MARKER_BYTE: u8 = 0xe7;
}

/// SVA_PROTECTED_PAGE, on the pages of `sva`. The driver binds the process and copies
/// `sva::SOURCE_VA` to `sva::DESTINATION_VA` (the IOMMU may now cache write permission for
/// it), reports `WRITTEN` and waits for `DOWNGRADED` (the process made the destination
/// read-only, which returned only after the server's invalidation, and the starter filled
/// that page with `PROTECTED_BYTE`). The device then writes the marker's bytes to the
/// read-only page, which must fault into the bind's queue as a permission fault and leave the
/// page unchanged, and copies the read-only page to the source (its read works); the driver
/// reports `FAULTED` and ends.
pub mod sva_protect {
    /// Phases in `report::PHASE`.
    pub const WRITTEN: u64 = 29;
    pub const FAULTED: u64 = 30;
    /// Commands in `report::COMMAND`.
    pub const DOWNGRADED: u64 = 29;
    /// The byte the starter fills the read-only page with.
    pub const PROTECTED_BYTE: u8 = 0x5a;
    /// SVA_PROTECT_WAITS's exit codes besides 0: `mem_protect` answered PeerGone, or another
    /// error.
    pub const UNCONFIRMED: u64 = 301;
    /// Where SVA_PROTECT_WAITS maps the page it makes read-only.
    pub const OWN_PAGE_VA: u64 = 0x5100_0000;
    pub const REFUSED: u64 = 302;
}


/// DETACH_STOPS_DMA. The driver attaches its device to an HWPT with a fault queue, maps a
/// source page at `SOURCE_IOVA` and a destination page at `DESTINATION_IOVA` and copies one to
/// the other through the device (every byte checked). Then it detaches the device, keeping the
/// mappings, reports `DETACHED` and, one step per command in `report::COMMAND`:
/// * `WRITE`: has the device write its buffer (the source's bytes) to `DESTINATION_IOVA`; the
///   destination must keep its fill; reports `WRITE_REFUSED`;
/// * `READ`: refills the source with another pattern and has the device read `SOURCE_IOVA`;
///   reports `READ_REFUSED`;
/// * `REATTACH`: checks its queue got none of these faults (a detached device's faults belong
///   to no queue: the server counts them as unrouted and logs them), attaches the device to
///   the same HWPT again, has the device write its buffer to the destination (which must not
///   hold the refilled source: the refused read brought nothing in), then copies the source to
///   the destination again, every byte checked, with no fault.
///
/// The starter checks between the steps that each refused access reached the server as a
/// fault of the device at that page, in that direction, with the unit's "not present" reason.
pub mod detach {
    pub const SOURCE_IOVA: u64 = 0x2000_0000;
    pub const DESTINATION_IOVA: u64 = 0x2000_1000;
    /// Phases in `report::PHASE`.
    pub const DETACHED: u64 = 270;
    pub const WRITE_REFUSED: u64 = 271;
    pub const READ_REFUSED: u64 = 272;
    /// Commands in `report::COMMAND`.
    pub const WRITE: u64 = 270;
    pub const READ: u64 = 271;
    pub const REATTACH: u64 = 272;
}

/// ITS_MSI: the driver's exit code when the server refuses `msi_alloc` (no isolated MSIs).
#[cfg(target_arch = "aarch64")]
pub const MSIS_REFUSED: u64 = 171;

/// FORGED_ITS_MSIS: the addresses outside the ITS doorbell page the hostile device is made to
/// write, in order: the next page of GITS_TRANSLATER's frame, the GIC distributor.
#[cfg(target_arch = "aarch64")]
pub const FORGED_ADDRESSES: [u64; 2] = [0x0809_1040, 0x0800_0040];

/// Capability slots the root task fills.
pub mod slot {
    /// Endpoint to the IOMMU server (WRITE, GRANT; badged).
    pub const SERVER: u64 = 1;
    /// MMIO of the first edu device's BAR0 (READ, WRITE, GRANT, DERIVE).
    pub const DEVICE: u64 = 2;
    /// A second endpoint to the server with another badge (HOSTILE, DESTROY_RACES_MAP,
    /// WINDOW_TAKEN).
    pub const SECOND_SERVER: u64 = 3;
    /// MMIO of the second edu device's BAR0 (TWO_DEVICES_ONE_IOAS, TWO_DEVICES_TWO_IOAS).
    pub const SECOND_DEVICE: u64 = 4;
    /// A third endpoint to the server with a third badge (DESTROY_RACES_MAP, WINDOW_TAKEN).
    pub const THIRD_SERVER: u64 = 5;
    /// Memory object of one page (READ, WRITE) through which the driver tells the root task
    /// how far it got (DESTROY_RACES_MAP, BENCH; words in `report`).
    pub const REPORT: u64 = 6;
    /// BENCH on arm with GICv2m only: the IRQ capability (CONTROL) of a GICv2m SPI that the
    /// starter aims the device's MSI at itself. The server hands drivers no MSIs there (GICv2m
    /// cannot tell devices apart); this gives the latency figure without isolation.
    pub const UNISOLATED_MSI: u64 = 38;
}

/// Words of the report page.
pub mod report {
    /// The scenario's phase (below).
    pub const PHASE: usize = 0;
    /// DESTROY_RACES_MAP: every check held; the driver now holds exactly its device and its
    /// fault queue (`OBJECTS_KEPT` objects) and no mapping, and waits to be killed.
    pub const RACE_DONE: u64 = 1;
    /// Objects the driver keeps in the server once the race is over.
    pub const OBJECTS_KEPT: u64 = 2;
    /// REVOKED_MEMORY_AND_DEVICE: the server removed the mappings of the revoked memory; the
    /// driver waits for `RETRY_DMA` in `COMMAND`.
    pub const MEMORY_REVOKED: u64 = 5;
    /// REVOKED_MEMORY_AND_DEVICE: the server unbound the device; its next DMA is refused.
    pub const DEVICE_REVOKED: u64 = 6;
    /// REVOKED_MEMORY_AND_DEVICE, LIMITS_EXHAUSTED: where the root task writes its command.
    pub const COMMAND: usize = 3;
    /// REVOKED_MEMORY_AND_DEVICE: retry the DMA.
    pub const RETRY_DMA: u64 = 1;
    /// LIMITS_EXHAUSTED: every limit reached, counts written; the driver waits for `LEAVE`.
    pub const AT_LIMITS: u64 = 7;
    /// SERVER_RESTART: DMA through the server works, the mapping stays; the driver waits.
    pub const RESTART_MAPPED: u64 = 9;
    /// SERVER_RESTART: reconnect to the new server (in `COMMAND`).
    pub const RECONNECT: u64 = 2;
    /// SERVER_RESTART: reconnected; DMA through the new server works.
    pub const RESTART_RECONNECTED: u64 = 10;
    /// RESET_FIRST_OWNER: set up, MSI taken; waiting for `LEAVE`.
    pub const RESET_OWNER_SET_UP: u64 = 11;
    /// LIMITS_EXHAUSTED: exit now (holding everything).
    pub const LEAVE: u64 = 1;
    /// LIMITS_EXHAUSTED: the first of the words that count the successful requests before
    /// `NoResources`, in the order of `LIMIT_STEPS`.
    pub const LIMIT_COUNTS: usize = 8;
    /// LIMITS_EXHAUSTED: the steps, in order: fault queues, HWPTs, PASIDs, areas of one page,
    /// IOASes (handles), large areas (server memory).
    pub const LIMIT_STEPS: usize = 6;
    /// BENCH: the instruction counter right after `fault_read` returned the record of the
    /// benchmark's refused DMA.
    pub const FAULT_HELD_AT: usize = 1;
    /// BENCH: the device's MSI is bound; the root task measures its latency with
    /// `MSI_COMMAND` (after `FAULT_HELD_AT` is written).
    pub const MSI_READY: u64 = 4;
    /// BENCH: the root task writes `MEASURE_MSI` here to have the driver raise the
    /// device's interrupt once and wait for it (the driver writes 0 back when woken, after
    /// `MSI_WOKEN_AT`), or `END` to let the driver end.
    pub const MSI_COMMAND: usize = 2;
    pub const MEASURE_MSI: u64 = 1;
    pub const END: u64 = 2;
    /// BENCH: the instruction counter right after the driver's wait for the MSI returned.
    pub const MSI_WOKEN_AT: usize = 3;
    /// FORGED_INTERRUPTS, FORGED_ITS_MSIS: the victim's MSI is bound and the hostile device
    /// attached with a fault queue; the root task may send the forged requests now.
    pub const FORGERY_TARGETS_READY: u64 = 3;
    /// ITS_MSI: the device took its interrupt and was destroyed; the driver waits for
    /// `COMMAND` = `LEAVE`.
    #[cfg(target_arch = "aarch64")]
    pub const DEVICE_GONE: u64 = 8;
}

/// FORGED_INTERRUPTS: the interrupt indices the forged requests name, in the order the root
/// task sends them: the victim's entry (the first the server hands out), an entry nobody was
/// given, an index beyond the server's 256-entry table.
#[cfg(target_arch = "x86_64")]
pub const FORGERY_INDICES: [u64; 3] = [0, 200, 0x91a];
