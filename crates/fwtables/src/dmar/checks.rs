//! The DMAR's "your BIOS is broken" checks: contents that are wrong although the structures
//! decode. Each finding becomes a [`Warning`] naming the structure, the field and its offset.

use alloc::vec::Vec;

use super::layout::{drhd, rmrr, scope};
use super::{DeviceScope, Drhd, RemappingStructure, Rmrr};
use crate::sdt::Signature;
use crate::warning::{Warning, WarningKind};

const PAGE_MASK: u64 = 0xfff;

/// Every warning for `structures`, in table order of the entries concerned.
pub(super) fn warnings(structures: &[RemappingStructure]) -> Vec<Warning> {
    let mut found = Vec::new();
    for structure in structures {
        match structure {
            RemappingStructure::Drhd(unit) => check_register_base(unit, &mut found),
            RemappingStructure::Rmrr(region) => check_region(region, &mut found),
            _ => {}
        }
        for s in scopes(structure) {
            check_scope(s, &mut found);
        }
    }
    check_units_together(structures, &mut found);
    found.sort_by_key(|w| w.entry);
    found
}

fn warn(structure: &'static str, entry: usize, field: crate::layout::Field<impl crate::layout::LeValue>, kind: WarningKind, entry_ignored: bool) -> Warning {
    Warning { table: Signature::DMAR, structure, entry, field: field.name, offset: entry + field.offset, kind, entry_ignored }
}

fn scopes(structure: &RemappingStructure) -> &[DeviceScope] {
    match structure {
        RemappingStructure::Drhd(s) => &s.scopes,
        RemappingStructure::Rmrr(s) => &s.scopes,
        RemappingStructure::Atsr(s) => &s.scopes,
        RemappingStructure::Satc(s) => &s.scopes,
        RemappingStructure::Sidp(s) => &s.scopes,
        RemappingStructure::Rhsa(_) | RemappingStructure::Andd(_) | RemappingStructure::Unknown { .. } => &[],
    }
}

/// A unit at address zero or off a page boundary cannot be programmed: it is ignored.
fn check_register_base(unit: &Drhd, found: &mut Vec<Warning>) {
    let kind = if unit.register_base == 0 {
        WarningKind::ZeroRegisterBase
    } else if unit.register_base & PAGE_MASK != 0 {
        WarningKind::RegisterBaseNotPageAligned { base: unit.register_base }
    } else {
        return;
    };
    found.push(warn("DRHD", unit.offset, drhd::REGISTER_BASE, kind, true));
}

/// An RMRR must cover whole pages, base to inclusive limit (VT-d §8.4); one that does not
/// cannot be identity-mapped as the firmware meant, so it is ignored.
fn check_region(region: &Rmrr, found: &mut Vec<Warning>) {
    let (base, limit) = (region.base, region.limit);
    let warning = if limit < base {
        warn("RMRR", region.offset, rmrr::LIMIT, WarningKind::RmrrLimitBelowBase { base, limit }, true)
    } else if base & PAGE_MASK != 0 {
        warn("RMRR", region.offset, rmrr::BASE, WarningKind::RmrrNotPageAligned { base, limit }, true)
    } else if limit & PAGE_MASK != PAGE_MASK {
        warn("RMRR", region.offset, rmrr::LIMIT, WarningKind::RmrrNotPageAligned { base, limit }, true)
    } else {
        return;
    };
    found.push(warning);
}

/// A scope without a path names no device; its Length (6, the header alone) is the culprit.
fn check_scope(s: &DeviceScope, found: &mut Vec<Warning>) {
    if s.path.is_empty() {
        found.push(warn("device scope", s.offset, scope::LENGTH, WarningKind::EmptyScopePath, true));
    }
}

/// Rules between units: no two units at one register base (the later is ignored), at most one
/// INCLUDE_PCI_ALL unit per segment (a second is ignored), and that unit last in its segment
/// (VT-d §8.3). The last rule only matters to software that matches in table order; the
/// matching here tries explicit scopes first, so an out-of-order catch-all is kept.
fn check_units_together(structures: &[RemappingStructure], found: &mut Vec<Warning>) {
    let usable: Vec<&Drhd> = structures
        .iter()
        .filter_map(|s| match s {
            RemappingStructure::Drhd(d) => Some(d),
            _ => None,
        })
        .filter(|d| !crate::warning::ignored(found, d.offset))
        .collect();
    let mut kept: Vec<&Drhd> = Vec::new();
    for (index, unit) in usable.iter().enumerate() {
        if let Some(first) = kept.iter().find(|k| k.register_base == unit.register_base) {
            found.push(warn("DRHD", unit.offset, drhd::REGISTER_BASE, WarningKind::DuplicateUnit { first: first.offset }, true));
            continue;
        }
        if unit.include_pci_all() {
            if let Some(first) = kept.iter().find(|k| k.segment == unit.segment && k.include_pci_all()) {
                let kind = WarningKind::SecondIncludePciAll { first: first.offset };
                found.push(warn("DRHD", unit.offset, drhd::FLAGS, kind, true));
                continue;
            }
            if let Some(next) = usable[index + 1..].iter().find(|d| d.segment == unit.segment) {
                let kind = WarningKind::IncludePciAllNotLast { next: next.offset };
                found.push(warn("DRHD", unit.offset, drhd::FLAGS, kind, false));
            }
        }
        kept.push(unit);
    }
}
