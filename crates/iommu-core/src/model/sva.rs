//! Process address spaces bound with `sva_bind`, as the kernel reports them changing.
//!
//! A bound address space is the process's own page tables: the server maps nothing in it. The
//! kernel reports every change that can shrink what a device reaches (an unmap, a permission
//! downgrade, a freed page-table page) as a record naming the address space and a range, and
//! holds the affected frames until the server acknowledges. The server acknowledges only after
//! [`ObjectModel::address_space_changed`] returned, that is after every unit with a binding of
//! that address space invalidated it and waited. When the process ends (or the capability the
//! binding was made with goes), [`ObjectModel::address_space_gone`] blocks every binding.

use alloc::vec::Vec;

use crate::backend::IommuBackend;
use crate::memory::MemorySource;
use crate::objects::{Attachment, Body, ObjectId};

use super::ObjectModel;

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

    /// The address space `space` shrank at `[iova, iova + length)` (or anywhere, `None`): every
    /// unit it is bound on drops what it cached of the range and waits for that. Returns the
    /// number of bindings invalidated; when this returns, the kernel may release the frames.
    pub fn address_space_changed(&mut self, space: u64, range: Option<(u64, u64)>) -> usize {
        let bindings = self.bindings_of(space);
        for &(device, slot) in &bindings {
            let (unit, rid) = (self.device(device).unit, self.device(device).rid);
            self.backend.invalidate_address_space(unit, rid, slot, range);
        }
        bindings.len()
    }

    /// The address space `space` is gone (its process ended) or may no longer be used (the
    /// capability it was bound with was revoked): every binding of it is blocked, with the
    /// invalidation that implies, and forgotten. Returns how many there were.
    pub fn address_space_gone(&mut self, space: u64) -> usize {
        let bindings = self.bindings_of(space);
        for &(device, slot) in &bindings {
            self.release_attachment(device, slot);
        }
        bindings.len()
    }
}
