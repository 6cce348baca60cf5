//! GICv3 LPIs and the Interrupt Translation Service: per-device MSIs that a device can raise
//! only for itself.
//!
//! Reference: GICv3/v4 Architecture Specification (IHI 0069), chapter 5 (LPIs, the ITS and its
//! commands), 12.9 (GITS_* registers) and 12.11 (GICR_PROPBASER/PENDBASER).
//!
//! A device's MSI is a write of an EventID to GITS_TRANSLATER; the ITS takes the DeviceID from
//! the bus (the requester ID, through the SMMU and the firmware's ID mappings), looks the pair
//! up in the device's Interrupt Translation Table (ITT) and raises the LPI found there. A pair
//! with no entry is dropped. So a device can raise only the LPIs the kernel mapped for its
//! DeviceID, whatever it writes, which is what makes these MSIs isolated (GICv2m's doorbell
//! names the SPI in the data and cannot tell devices apart).
//!
//! The kernel drives one ITS and one redistributor (one CPU): collection 0 targets it, and
//! every LPI is in it. LPIs are message-signalled, so, unlike SPIs, they are not masked while a
//! driver services its device: an LPI is enabled when its line is bound and disabled when
//! unbound (its configuration byte, then INV so the redistributor rereads it).
//!
//! What is not observable: the ITS drops a write naming an unmapped EventID, or an EventID
//! beyond the device's ITT, without any record the guest can read. The architecture leaves
//! such translation errors IMPLEMENTATION DEFINED (it may report them through GITS_STATUSR,
//! optional in GICv3.0 and absent from QEMU 10.0.2's ITS, which only logs a guest error).

use super::gic::{read32, read64, write32, write64};
use crate::mm::{phys_to_virt, CONTIGUOUS, FRAME_SIZE};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

// ITS registers (ITS_base), IHI 0069 12.19.
const GITS_CTLR: u64 = 0x0000;
const GITS_TYPER: u64 = 0x0008;
const GITS_CBASER: u64 = 0x0080;
const GITS_CWRITER: u64 = 0x0088;
const GITS_CREADR: u64 = 0x0090;
const GITS_BASER: u64 = 0x0100;
const GITS_BASER_COUNT: u64 = 8;
/// The translation register is in the second 64 KiB frame (GITS_TRANSLATER at + 0x10040).
pub const GITS_TRANSLATER_OFFSET: u64 = 0x1_0040;

/// GITS_CTLR: Enabled (bit 0); Quiescent (bit 31), set once the ITS has no work in flight.
const GITS_CTLR_ENABLED: u32 = 1 << 0;
const GITS_CTLR_QUIESCENT: u32 = 1 << 31;
/// GITS_TYPER: ITT_entry_size bits [7:4] (bytes - 1), Devbits [17:13] (DeviceID bits - 1),
/// PTA bit 19 (collections name redistributors by physical address, else by processor number).
const TYPER_ITT_ENTRY_SIZE: (u32, u64) = (4, 0xF);
const TYPER_DEVBITS: (u32, u64) = (13, 0x1F);
const TYPER_PTA: u64 = 1 << 19;
/// GITS_BASER<n>: Valid bit 63, Type [58:56] (1 devices, 4 collections), Entry_Size [52:48]
/// (bytes - 1), Physical_Address [47:12] (4 KiB pages), Shareability [11:10], Page_Size [9:8]
/// (0: 4 KiB), Size [7:0] (pages - 1). Also GITS_CBASER: Valid 63, address [51:12], Size [7:0].
const BASER_VALID: u64 = 1 << 63;
const BASER_TYPE: (u32, u64) = (56, 0x7);
const BASER_ENTRY_SIZE: (u32, u64) = (48, 0x1F);
const BASER_ADDRESS: u64 = 0x0000_FFFF_FFFF_F000;
const BASER_TYPE_DEVICES: u64 = 1;
const BASER_TYPE_COLLECTIONS: u64 = 4;
const BASER_MAX_PAGES: u64 = 256;
/// InnerCache [61:59] = 0b111 (write-back, read- and write-allocate), Shareability [11:10] =
/// 0b01 (inner shareable): how the kernel's own mapping of the tables treats them.
const TABLE_ATTRIBUTES: u64 = 0b111 << 59 | 0b01 << 10;

// Redistributor (RD_base) LPI registers, IHI 0069 12.11.
const GICR_CTLR: u64 = 0x0000;
const GICR_TYPER: u64 = 0x0008;
const GICR_PROPBASER: u64 = 0x0070;
const GICR_PENDBASER: u64 = 0x0078;
/// GICR_CTLR.EnableLPIs (bit 0); GICR_TYPER.PLPIS (bit 0): physical LPIs supported.
const GICR_CTLR_ENABLE_LPIS: u32 = 1 << 0;
const GICR_TYPER_PLPIS: u64 = 1 << 0;
/// GICR_TYPER.Processor_Number, bits [23:8]: what a collection names without PTA.
const GICR_TYPER_PROCESSOR: (u32, u64) = (8, 0xFFFF);
/// GICR_PROPBASER.IDbits [4:0]: INTID bits - 1. 14 bits (INTIDs below 16384) is the least
/// the redistributor must accept with LPIs (8192 LPIs); InnerCache [9:7], Shareability [11:10]
/// as in TABLE_ATTRIBUTES. GICR_PENDBASER: PTZ bit 62 (the table is zeroed), address [51:16].
const LPI_ID_BITS: u64 = 14;
const REDIST_TABLE_ATTRIBUTES: u64 = 0b111 << 7 | 0b01 << 10;
const PENDBASER_PTZ: u64 = 1 << 62;

/// The first LPI's INTID and how many the kernel hands out (its property table covers all
/// 8192 the ID bits allow; routes use the first `LPI_POOL`).
pub const FIRST_LPI: u32 = 8192;
const LPI_POOL: usize = 256;
/// LPI configuration byte: Enable bit 0, Priority bits [7:2] (the GIC's common priority).
const LPI_ENABLE: u8 = 1 << 0;
const LPI_PRIORITY: u8 = 0xA0;

/// ITS commands (IHI 0069 5.3): 32 bytes, the command number in DW0 bits [7:0].
const CMD_SYNC: u64 = 0x05;
const CMD_MAPD: u64 = 0x08;
const CMD_MAPC: u64 = 0x09;
const CMD_MAPTI: u64 = 0x0A;
const CMD_INV: u64 = 0x0C;
const CMD_DISCARD: u64 = 0x0F;
/// MAPD/MAPC DW2 bit 63: the mapping is valid (clear: unmap).
const CMD_VALID: u64 = 1 << 63;
const COMMAND_BYTES: u64 = 32;
/// One 4 KiB page of command queue: 128 commands.
const QUEUE_BYTES: u64 = FRAME_SIZE;
/// How many times to read GITS_CREADR before declaring the ITS stuck (QEMU completes the
/// queue during the CWRITER write; hardware takes microseconds).
const COMMAND_WAIT_READS: u32 = 1_000_000;
/// The one collection, targeting the one redistributor.
const COLLECTION: u64 = 0;

/// Most events (MSIs) one device may have.
const MAX_EVENTS: u32 = kernel_abi::MAX_MSI_EVENTS as u32;

/// Why a route is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No ITS is in use (GICv2, or none described).
    NoIts,
    /// The count is not a power of two in 1..=MAX_EVENTS, or the DeviceID is beyond the device
    /// table.
    Invalid,
    /// The device has its events mapped already.
    Busy,
    /// No LPIs or no memory for the device's ITT.
    Exhausted,
}

struct DeviceRoute {
    device_id: u32,
    /// The ITT's physical address (one page).
    itt: u64,
    /// Event i raises LPI `first_lpi + i`.
    first_lpi: u32,
    events: u32,
}

struct Its {
    base: u64,
    queue: u64,
    /// Byte offset of the next command slot.
    write: u64,
    /// Where MAPC/SYNC name the redistributor (its processor number, or its address >> 16).
    rdbase: u64,
    /// DeviceIDs below this have a device-table entry.
    device_limit: u32,
    itt_entry_bytes: u64,
    /// Physical address of the LPI property table (one byte per LPI).
    properties: u64,
    /// Physical address of the LPI pending table (one bit per INTID), which the redistributor
    /// keeps in memory: a disabled LPI that was raised stays pending there.
    pending: u64,
    taken: [bool; LPI_POOL],
    routes: Vec<DeviceRoute>,
}

static ITS: Mutex<Option<Its>> = Mutex::new(None);

fn field(value: u64, (shift, mask): (u32, u64)) -> u64 {
    value >> shift & mask
}

/// Sets up the redistributor's LPI tables and the ITS at `its_base` (its command queue, device
/// and collection tables, collection 0 mapped to this CPU's redistributor) and enables both.
/// Called once, after `gic::init` found a GICv3, with the ITS the device tree names.
pub fn init(its_base: u64, redistributor: u64) {
    assert!(read64(redistributor + GICR_TYPER) & GICR_TYPER_PLPIS != 0, "GICv3 redistributor without LPIs beside an ITS");
    // The LPI property table: 2^14 - 8192 bytes, every LPI disabled at the common priority.
    let lpis = (1u64 << LPI_ID_BITS) - u64::from(FIRST_LPI);
    let properties = allocate(lpis.div_ceil(FRAME_SIZE));
    // SAFETY: just allocated from the contiguous pool (in the direct map), owned by the ITS.
    unsafe { core::ptr::write_bytes(phys_to_virt(properties), LPI_PRIORITY, lpis as usize) };
    // The pending table: one bit per INTID below 2^14, 64 KiB-aligned (16 pages aligned so).
    let pending = allocate(16);
    // EnableLPIs is still 0 (reset), so both registers may be written (IHI 0069 5.1.1).
    write64(redistributor + GICR_PROPBASER, properties | REDIST_TABLE_ATTRIBUTES | (LPI_ID_BITS - 1));
    write64(redistributor + GICR_PENDBASER, pending | REDIST_TABLE_ATTRIBUTES | PENDBASER_PTZ);
    fence();
    write32(redistributor + GICR_CTLR, read32(redistributor + GICR_CTLR) | GICR_CTLR_ENABLE_LPIS);

    write32(its_base + GITS_CTLR, read32(its_base + GITS_CTLR) & !GITS_CTLR_ENABLED);
    while read32(its_base + GITS_CTLR) & GITS_CTLR_QUIESCENT == 0 {
        core::hint::spin_loop();
    }
    let typer = read64(its_base + GITS_TYPER);
    let device_bits = field(typer, TYPER_DEVBITS) + 1;
    let mut device_limit = 0;
    for n in 0..GITS_BASER_COUNT {
        let register = its_base + GITS_BASER + n * 8;
        let baser = read64(register);
        let entry_bytes = field(baser, BASER_ENTRY_SIZE) + 1;
        // Devices: one flat table for every DeviceID a PCI segment has (16-bit requester IDs)
        // if the ITS takes that many, within the 256 pages one register can describe.
        let entries = match field(baser, BASER_TYPE) {
            BASER_TYPE_DEVICES => 1u64 << device_bits.min(16),
            BASER_TYPE_COLLECTIONS => 1,
            _ => continue,
        };
        let pages = (entries * entry_bytes).div_ceil(FRAME_SIZE).min(BASER_MAX_PAGES);
        let table = allocate(pages);
        let kept = baser & (BASER_TYPE.1 << BASER_TYPE.0 | BASER_ENTRY_SIZE.1 << BASER_ENTRY_SIZE.0);
        write64(register, BASER_VALID | kept | TABLE_ATTRIBUTES | table | (pages - 1));
        assert!(read64(register) & BASER_ADDRESS == table, "the ITS refused a 4 KiB-page table in GITS_BASER{n}");
        if field(baser, BASER_TYPE) == BASER_TYPE_DEVICES {
            device_limit = (pages * FRAME_SIZE / entry_bytes).min(1 << device_bits) as u32;
        }
    }
    assert!(device_limit > 0, "the ITS has no device table");
    let queue = allocate(QUEUE_BYTES / FRAME_SIZE);
    write64(its_base + GITS_CBASER, BASER_VALID | TABLE_ATTRIBUTES | queue | (QUEUE_BYTES / FRAME_SIZE - 1));
    write64(its_base + GITS_CWRITER, 0);
    write32(its_base + GITS_CTLR, read32(its_base + GITS_CTLR) | GITS_CTLR_ENABLED);

    let rdbase = if typer & TYPER_PTA != 0 { redistributor >> 16 } else { field(read64(redistributor + GICR_TYPER), GICR_TYPER_PROCESSOR) };
    let mut its = Its {
        base: its_base,
        queue,
        write: 0,
        rdbase,
        device_limit,
        itt_entry_bytes: field(typer, TYPER_ITT_ENTRY_SIZE) + 1,
        properties,
        pending,
        taken: [false; LPI_POOL],
        routes: Vec::new(),
    };
    // MAPC (DW2: ICID [15:0], RDbase [51:16], V bit 63).
    its.command([CMD_MAPC, 0, CMD_VALID | its.rdbase << 16 | COLLECTION, 0]);
    its.sync();
    crate::println!("gic: ITS at {its_base:#x}: {device_limit} DeviceIDs, {LPI_POOL} LPIs from {FIRST_LPI}");
    *ITS.lock() = Some(its);
}

/// Zeroed, physically contiguous pages for the GIC's tables, never freed (the ITS and the
/// redistributor own them from here on).
fn allocate(pages: u64) -> u64 {
    CONTIGUOUS.lock().alloc(pages as usize).expect("no contiguous memory for the GIC's LPI tables")
}

/// Makes the tables and commands written so far visible to the GIC before it is told of them.
fn fence() {
    // SAFETY: a barrier; no memory is accessed.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
}

impl Its {
    /// Writes one command and waits until the ITS has read it (GITS_CREADR reaches it).
    fn command(&mut self, words: [u64; 4]) {
        let slot = phys_to_virt(self.queue + self.write).cast::<u64>();
        for (index, word) in words.into_iter().enumerate() {
            // SAFETY: the slot is inside the command queue page the ITS owns, 32-byte aligned;
            // the ITS has consumed it (the previous command was waited for).
            unsafe { slot.add(index).write_volatile(word) };
        }
        self.write = (self.write + COMMAND_BYTES) % QUEUE_BYTES;
        fence();
        // GITS_CWRITER.Offset, bits [19:5]: the byte offset itself.
        write64(self.base + GITS_CWRITER, self.write);
        for _ in 0..COMMAND_WAIT_READS {
            if read64(self.base + GITS_CREADR) & !0x1F == self.write {
                return;
            }
            core::hint::spin_loop();
        }
        panic!("ITS command {:#x} not consumed (GITS_CREADR {:#x})", words[0] & 0xFF, read64(self.base + GITS_CREADR));
    }

    /// SYNC (DW2: RDbase [51:16]): every earlier command's effects reach the redistributor.
    fn sync(&mut self) {
        self.command([CMD_SYNC, 0, self.rdbase << 16, 0]);
    }

    /// DW0 of a command naming a device: the DeviceID in bits [63:32].
    fn device_word(command: u64, device_id: u32) -> u64 {
        command | u64::from(device_id) << 32
    }

    fn route(&mut self, device_id: u32, events: u32) -> Result<u32, RouteError> {
        if !events.is_power_of_two() || events > MAX_EVENTS || device_id >= self.device_limit {
            return Err(RouteError::Invalid);
        }
        if self.routes.iter().any(|route| route.device_id == device_id) {
            return Err(RouteError::Busy);
        }
        let count = events as usize;
        let first = (0..=LPI_POOL - count).find(|&first| self.taken[first..first + count].iter().all(|taken| !taken)).ok_or(RouteError::Exhausted)?;
        // One page holds MAX_EVENTS entries of any size the ITS may ask (at most 16 bytes).
        debug_assert!(u64::from(MAX_EVENTS) * self.itt_entry_bytes <= FRAME_SIZE);
        let itt = CONTIGUOUS.lock().alloc(1).ok_or(RouteError::Exhausted)?;
        self.taken[first..first + count].fill(true);
        let first_lpi = FIRST_LPI + first as u32;
        // MAPD: DW1 Size [4:0] = EventID bits - 1 (at least one bit), DW2 ITT_addr [51:8], V.
        // EventIDs of the ITT beyond `events` have no entry and are dropped.
        let size = events.trailing_zeros().max(1) - 1;
        self.command([Self::device_word(CMD_MAPD, device_id), u64::from(size), CMD_VALID | itt, 0]);
        for event in 0..events {
            // MAPTI: DW1 EventID [31:0], pINTID [63:32]; DW2 ICID [15:0].
            self.command([Self::device_word(CMD_MAPTI, device_id), u64::from(first_lpi + event) << 32 | u64::from(event), COLLECTION, 0]);
        }
        self.sync();
        self.routes.push(DeviceRoute { device_id, itt, first_lpi, events });
        Ok(first_lpi)
    }

    fn unroute(&mut self, device_id: u32) -> bool {
        let Some(index) = self.routes.iter().position(|route| route.device_id == device_id) else { return false };
        let route = self.routes.swap_remove(index);
        for event in 0..route.events {
            self.set_property(route.first_lpi + event, false);
            // DISCARD (DW1 EventID): the mapping goes and a pending LPI with it.
            self.command([Self::device_word(CMD_DISCARD, device_id), u64::from(event), 0, 0]);
        }
        // MAPD with V clear: the device has no ITT; any write of it is dropped.
        self.command([Self::device_word(CMD_MAPD, device_id), 0, 0, 0]);
        self.sync();
        let first = (route.first_lpi - FIRST_LPI) as usize;
        self.taken[first..first + route.events as usize].fill(false);
        CONTIGUOUS.lock().free(route.itt, 1);
        true
    }

    /// Sets LPI `lpi`'s enable bit; true if it changed.
    fn set_property(&mut self, lpi: u32, enabled: bool) -> bool {
        let byte = phys_to_virt(self.properties + u64::from(lpi - FIRST_LPI));
        let value = LPI_PRIORITY | if enabled { LPI_ENABLE } else { 0 };
        // SAFETY: the byte is inside the property table (lpi is in the pool), owned by the GIC.
        unsafe {
            if byte.read_volatile() == value {
                return false;
            }
            byte.write_volatile(value);
        }
        true
    }

    fn set_enabled(&mut self, lpi: u32, enabled: bool) {
        let Some(route) = self.routes.iter().find(|route| (route.first_lpi..route.first_lpi + route.events).contains(&lpi)) else { return };
        let (device_id, event) = (route.device_id, lpi - route.first_lpi);
        if self.set_property(lpi, enabled) {
            // INV (DW1 EventID): the redistributor rereads the LPI's configuration.
            fence();
            self.command([Self::device_word(CMD_INV, device_id), u64::from(event), 0, 0]);
            self.sync();
        }
    }
}

/// Maps `events` EventIDs (a power of two up to MAX_EVENTS) of `device_id` to fresh LPIs;
/// returns the LPI of EventID 0 (EventID i raises that + i).
pub fn route(device_id: u32, events: u32) -> Result<u32, RouteError> {
    ITS.lock().as_mut().ok_or(RouteError::NoIts)?.route(device_id, events)
}

/// Unmaps every event of `device_id` (DISCARD, then MAPD with V clear) and frees its LPIs;
/// false if it had none.
pub fn unroute(device_id: u32) -> bool {
    ITS.lock().as_mut().is_some_and(|its| its.unroute(device_id))
}

/// The physical address of GITS_TRANSLATER, if an ITS is in use.
pub fn translater() -> Option<u64> {
    ITS.lock().as_ref().map(|its| its.base + GITS_TRANSLATER_OFFSET)
}

/// LPIs the CPU has taken since boot: what tests compare to show a forged MSI raised nothing.
static TAKEN: AtomicU64 = AtomicU64::new(0);

pub fn count_taken() {
    TAKEN.fetch_add(1, Ordering::Relaxed);
}

pub fn taken() -> u64 {
    TAKEN.load(Ordering::Relaxed)
}

/// How many LPIs of the pool the pending table shows pending: a raised LPI that is disabled,
/// or not yet taken, counts.
pub fn pending() -> usize {
    let Some(its) = ITS.lock().as_ref().map(|its| its.pending) else { return 0 };
    (0..LPI_POOL as u64 / 8)
        .map(|index| {
            let byte = phys_to_virt(its + u64::from(FIRST_LPI) / 8 + index);
            // SAFETY: inside the pending table (INTIDs below 2^LPI_ID_BITS), in the direct map;
            // the redistributor writes it, reading it has no effect.
            unsafe { byte.read_volatile() }.count_ones() as usize
        })
        .sum()
}

pub fn is_lpi(intid: u32) -> bool {
    intid >= FIRST_LPI
}

/// Enables or disables a routed LPI (others are ignored).
pub fn set_enabled(lpi: u32, enabled: bool) {
    if let Some(its) = ITS.lock().as_mut() {
        its.set_enabled(lpi, enabled);
    }
}
