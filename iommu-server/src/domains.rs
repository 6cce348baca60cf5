//! A backend's domains by `HwDomainId`. Every map and unmap starts with this lookup, so it is an
//! index into a vector rather than a tree search. An id carries its slot's generation as well
//! as the slot, so a stale id (of a freed domain whose slot was reused) finds nothing.

use alloc::vec::Vec;
use iommu_core::HwDomainId;

struct Slot<T> {
    generation: u32,
    domain: Option<T>,
}

pub struct DomainSlots<T> {
    slots: Vec<Slot<T>>,
}

impl<T> DomainSlots<T> {
    pub const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// Stores `domain` in a free slot and returns its id (never 0).
    pub fn insert(&mut self, domain: T) -> HwDomainId {
        let index = match self.slots.iter().position(|slot| slot.domain.is_none()) {
            Some(index) => index,
            None => {
                self.slots.push(Slot { generation: 0, domain: None });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.domain = Some(domain);
        HwDomainId((slot.generation as u64) << 32 | index as u64)
    }

    fn slot(&self, id: HwDomainId) -> Option<&Slot<T>> {
        let slot = self.slots.get((id.0 & 0xffff_ffff) as usize)?;
        (slot.generation as u64 == id.0 >> 32).then_some(slot)
    }

    pub fn get(&self, id: HwDomainId) -> Option<&T> {
        self.slot(id)?.domain.as_ref()
    }

    pub fn get_mut(&mut self, id: HwDomainId) -> Option<&mut T> {
        self.slot(id)?;
        self.slots[(id.0 & 0xffff_ffff) as usize].domain.as_mut()
    }

    pub fn remove(&mut self, id: HwDomainId) -> Option<T> {
        self.slot(id)?;
        self.slots[(id.0 & 0xffff_ffff) as usize].domain.take()
    }
}
