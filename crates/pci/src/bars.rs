//! Memory BARs: sizing, and placement with the bridge windows above them where no firmware
//! placed them.

use alloc::vec::Vec;

use crate::enumerate::Topology;
use crate::regs::{self, bar, command};
use crate::{Address, ConfigAccess};

/// A memory BAR of a function. `base` 0: not assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub base: u64,
    pub size: u64,
    /// A 64-bit BAR (it also occupies the next BAR register).
    pub is_64: bool,
}

/// Sizes the memory BARs of the function (all ones written, the size read back from the
/// bits that stay zero; PCI 3.0, 6.2.5.1) with its decoding switched off meanwhile, and
/// restores them.
pub fn size_bars<C: ConfigAccess>(config: &mut C, address: Address, count: u8) -> Vec<Bar> {
    let command = config.read32(address, regs::COMMAND) & 0xffff;
    config.write32(address, regs::COMMAND, command & !(command::IO_SPACE | command::MEMORY_SPACE));
    let mut bars = Vec::new();
    let mut index = 0u8;
    while index < count {
        let offset = regs::BAR0 + 4 * u16::from(index);
        let low = config.read32(address, offset);
        if low & bar::IO != 0 {
            index += 1;
            continue;
        }
        let is_64 = (low >> bar::TYPE_SHIFT) & bar::TYPE_MASK == bar::TYPE_64 && index + 1 < count;
        config.write32(address, offset, u32::MAX);
        let size_low = config.read32(address, offset) & !bar::FLAGS;
        config.write32(address, offset, low);
        let (base, mask) = if is_64 {
            let high = config.read32(address, offset + 4);
            config.write32(address, offset + 4, u32::MAX);
            let size_high = config.read32(address, offset + 4);
            config.write32(address, offset + 4, high);
            (u64::from(high) << 32 | u64::from(low & !bar::FLAGS), u64::from(size_high) << 32 | u64::from(size_low))
        } else {
            (u64::from(low & !bar::FLAGS), 0xffff_ffff_0000_0000 | u64::from(size_low))
        };
        if size_low != 0 || (is_64 && mask >> 32 != 0xffff_ffff) {
            bars.push(Bar { index, base, size: (!mask).wrapping_add(1), is_64 });
        }
        index += if is_64 { 2 } else { 1 };
    }
    config.write32(address, regs::COMMAND, command);
    bars
}

/// The address memory BAR `index` of the function decodes (64-bit BARs read with their
/// upper half), without writing anything; `None` for an I/O BAR or one at address 0.
pub fn read_base<C: ConfigAccess>(config: &mut C, address: Address, index: u8) -> Option<u64> {
    let offset = regs::BAR0 + 4 * u16::from(index);
    let low = config.read32(address, offset);
    if low & bar::IO != 0 {
        return None;
    }
    let high = if (low >> bar::TYPE_SHIFT) & bar::TYPE_MASK == bar::TYPE_64 { config.read32(address, offset + 4) } else { 0 };
    let base = u64::from(high) << 32 | u64::from(low & !bar::FLAGS);
    (base != 0).then_some(base)
}

/// Physical addresses `[start, end)` BARs may be placed in (identity-mapped between CPU and
/// PCI, below 4 GiB: bridges' non-prefetchable windows decode 32 bits only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryWindow {
    pub start: u64,
    pub end: u64,
}

/// A BAR that did not fit the window and stays unassigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unplaced {
    pub address: Address,
    pub index: u8,
    pub size: u64,
}

/// Places every memory BAR of the hierarchy in `window`, from scratch (whatever an earlier
/// owner programmed could overlap what is handed out): each BAR aligned to its size (a BAR
/// decodes naturally aligned), the BARs below a bridge together inside the bridge's memory
/// window (1 MiB granules), which is programmed; the prefetchable window is closed, so
/// everything goes through the non-prefetchable one. Functions whose BARs all fit decode
/// memory afterwards (command bit 1), as do the bridges with a window; the others are left
/// not decoding and their unplaced BARs are dropped from `topology` and returned.
pub fn assign<C: ConfigAccess>(config: &mut C, topology: &mut Topology, window: MemoryWindow) -> Vec<Unplaced> {
    let mut unplaced = Vec::new();
    let mut cursor = window.start;
    place_below(config, topology, None, window, &mut cursor, &mut unplaced);
    unplaced
}

/// Places the BARs of the children of `parent` (`None`: the first bus) from `cursor` on.
fn place_below<C: ConfigAccess>(
    config: &mut C,
    topology: &mut Topology,
    parent: Option<usize>,
    window: MemoryWindow,
    cursor: &mut u64,
    unplaced: &mut Vec<Unplaced>,
) {
    for index in 0..topology.functions.len() {
        if topology.functions[index].parent != parent {
            continue;
        }
        let address = topology.functions[index].address;
        let command = config.read32(address, regs::COMMAND) & 0xffff & !command::MEMORY_SPACE;
        config.write32(address, regs::COMMAND, command);
        let mut all_placed = true;
        for bar in topology.functions[index].bars.iter_mut() {
            let base = cursor.next_multiple_of(bar.size);
            let offset = regs::BAR0 + 4 * u16::from(bar.index);
            if base + bar.size > window.end || (!bar.is_64 && base + bar.size > 1 << 32) {
                unplaced.push(Unplaced { address, index: bar.index, size: bar.size });
                bar.base = 0;
                all_placed = false;
                continue;
            }
            // The low four bits (type, prefetchable) are read-only: writing zeros there is fine.
            config.write32(address, offset, base as u32);
            if bar.is_64 {
                config.write32(address, offset + 4, (base >> 32) as u32);
            }
            bar.base = base;
            *cursor = base + bar.size;
        }
        topology.functions[index].bars.retain(|bar| bar.base != 0);
        let mut decodes = all_placed && !topology.functions[index].bars.is_empty();
        if topology.functions[index].bridge.is_some() {
            let start = cursor.next_multiple_of(regs::BRIDGE_WINDOW_ALIGN);
            *cursor = start;
            place_below(config, topology, Some(index), window, cursor, unplaced);
            let end = cursor.next_multiple_of(regs::BRIDGE_WINDOW_ALIGN).min(window.end);
            *cursor = end;
            // An empty window is closed by a base above its limit.
            let (base, limit) = if end > start { (start, end - 1) } else { (regs::BRIDGE_WINDOW_ALIGN, 0) };
            let encode = |a: u64| ((a >> 16) as u32) & 0xfff0;
            config.write32(address, regs::BRIDGE_MEMORY, encode(limit) << 16 | encode(base));
            config.write32(address, regs::BRIDGE_PREFETCHABLE, 0xfff0);
            config.write32(address, regs::BRIDGE_PREFETCHABLE_BASE_UPPER, u32::MAX);
            config.write32(address, regs::BRIDGE_PREFETCHABLE_LIMIT_UPPER, 0);
            decodes = all_placed && end > start;
        }
        if decodes {
            config.write32(address, regs::COMMAND, command | command::MEMORY_SPACE);
        }
    }
}
