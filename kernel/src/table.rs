//! A slab of kernel records addressed by generation-tagged ids: O(1) lookups on the system-call
//! path, and an id whose record was removed never finds the record that reuses its slot.

use alloc::vec::Vec;

/// Low 16 bits: slot index; high 16 bits: the slot's generation when the id was issued.
pub type Id = u32;

const INDEX_BITS: u32 = 16;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

pub struct Table<T> {
    /// Each slot's id (its record's, or while empty the one its next record gets) and record.
    /// Whole ids are kept so that a lookup compares one word.
    slots: Vec<(Id, Option<T>)>,
    free: Vec<u16>,
}

impl<T> Table<T> {
    pub const fn new() -> Self {
        Table { slots: Vec::new(), free: Vec::new() }
    }

    fn index(id: Id) -> usize {
        (id & INDEX_MASK) as usize
    }

    /// The id the next `insert` will return (ids are never 0: generations start at 1).
    pub fn next_id(&self) -> Option<Id> {
        match self.free.last() {
            Some(&index) => Some(self.slots[index as usize].0),
            None if self.slots.len() <= INDEX_MASK as usize => Some((1 << INDEX_BITS) | self.slots.len() as u32),
            None => None,
        }
    }

    /// Stores `value` under `next_id()`; `None` when all 65,536 slots are in use.
    pub fn insert(&mut self, value: T) -> Option<Id> {
        let id = self.next_id()?;
        let index = Self::index(id);
        if index == self.slots.len() {
            self.slots.push((id, Some(value)));
        } else {
            self.free.pop();
            self.slots[index].1 = Some(value);
        }
        Some(id)
    }

    pub fn get(&self, id: &Id) -> Option<&T> {
        match self.slots.get(Self::index(*id)) {
            Some((slot_id, Some(value))) if slot_id == id => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut T> {
        match self.slots.get_mut(Self::index(*id)) {
            Some((slot_id, Some(value))) if slot_id == id => Some(value),
            _ => None,
        }
    }

    pub fn contains_key(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn remove(&mut self, id: &Id) -> Option<T> {
        let index = Self::index(*id);
        let slot = self.slots.get_mut(index)?;
        if slot.0 != *id {
            return None;
        }
        let value = slot.1.take()?;
        // The slot's next record gets the next generation; generation 0 is never issued, so ids
        // are never 0.
        let generation = ((*id >> INDEX_BITS) as u16).checked_add(1).unwrap_or(1);
        slot.0 = ((generation as u32) << INDEX_BITS) | index as u32;
        self.free.push(index as u16);
        Some(value)
    }

    pub fn keys(&self) -> impl Iterator<Item = Id> + '_ {
        self.slots.iter().filter(|(_, v)| v.is_some()).map(|(id, _)| *id)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|(_, v)| v.as_mut())
    }
}

impl<T> core::ops::Index<&Id> for Table<T> {
    type Output = T;
    fn index(&self, id: &Id) -> &T {
        self.get(id).expect("live id")
    }
}
