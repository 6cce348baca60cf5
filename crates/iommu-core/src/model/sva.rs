//! Process address spaces bound with `sva_bind`, as the kernel reports them changing.
//!
//! A bound address space is the process's own page tables: the server maps nothing in it. The
//! kernel reports every change that can shrink what a device reaches (an unmap, a permission
//! downgrade, a freed page-table page) as a record naming the address space and a range, and
//! holds the affected frames until the server acknowledges. [`ObjectModel::address_space_record`]
//! acknowledges only after every unit with a binding of that address space invalidated the
//! range and waited. When the process ends (or the capability the binding was made with
//! goes), every binding of it is blocked before the acknowledgement.

use alloc::vec::Vec;

use crate::backend::IommuBackend;
use crate::memory::MemorySource;
use crate::objects::{Attachment, Body, ObjectId};

use super::ObjectModel;

/// What the kernel reports about a bound address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpaceChange {
    /// `[iova, iova + length)` reaches less than before: unmapped, write permission taken, or
    /// page-table pages under it freed. The frames are held until the acknowledgement.
    Shrunk { iova: u64, length: u64 },
    /// The process ended, or the capability the address space was bound with went.
    Gone,
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Every (device, slot) bound to the address space the kernel names `space`.
    fn bindings_of(&self, space: u64) -> Vec<(ObjectId, Option<u32>)> {
        let mut bindings = Vec::new();
        for (id, object) in self.objects.iter() {
            if let Body::Device(device) = &object.body {
                for (slot, attachment) in &device.attachments {
                    if matches!(attachment, Attachment::Sva { address_space, .. } if address_space.id == space) {
                        bindings.push((id, *slot));
                    }
                }
            }
        }
        bindings
    }

    /// Whether any device is bound to the address space the kernel names `space`.
    pub fn address_space_bound(&self, space: u64) -> bool {
        !self.bindings_of(space).is_empty()
    }

    /// Applies the kernel's record that the address space `space` changed, then calls
    /// `acknowledge` (which lets the kernel release the frames it held): every binding of the
    /// address space is invalidated for the range (`Shrunk`), or blocked and forgotten
    /// (`Gone`), and every unit has waited for that before `acknowledge` runs. Returns the
    /// number of bindings concerned.
    pub fn address_space_record(&mut self, space: u64, change: AddressSpaceChange, acknowledge: impl FnOnce()) -> usize {
        let bindings = self.bindings_of(space);
        for &(device, slot) in &bindings {
            match change {
                AddressSpaceChange::Shrunk { iova, length } => {
                    let (unit, rid) = (self.device(device).unit, self.device(device).rid);
                    self.backend.invalidate_address_space(unit, rid, slot, iova, length);
                }
                AddressSpaceChange::Gone => self.release_attachment(device, slot),
            }
        }
        acknowledge();
        bindings.len()
    }
}
