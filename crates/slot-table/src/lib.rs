//! A slab of records addressed by generation-tagged keys.
//!
//! A key is a slot index in its low bits and the slot's generation in the bits above. Lookup is
//! an index and a compare, which is why the system-call path of the kernel and the request path
//! of the IOMMU server use it instead of ordered maps. Removing a record advances its slot's
//! generation, so a stale key never finds the record that reuses the slot; a slot whose
//! generation is used up is retired rather than wrapped, so **no key is ever issued twice**.
//! Slot 0 is never used, so key 0 is never issued either and can mean "none" in an ABI.
//!
//! The key layout is the key type's choice ([`SlotKey`]): the kernel's process and thread ids and
//! the IOMMU server's client handles are 32-bit (16 index bits), the server's internal object
//! ids 64-bit.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::marker::PhantomData;

/// A key type: how many low bits hold the slot index and how many above them the generation.
pub trait SlotKey: Copy {
    /// Bits of the slot index (at most 32).
    const INDEX_BITS: u32;
    /// Bits of the generation (at most 32).
    const GENERATION_BITS: u32;
    /// The key with this raw value.
    fn from_raw(raw: u64) -> Self;
    /// The raw value.
    fn raw(self) -> u64;
}

/// Implements [`SlotKey`] for a tuple struct over `u64`: `slot_key!(ObjectId, 32, 32)` gives it
/// 32 index bits and 32 generation bits.
#[macro_export]
macro_rules! slot_key {
    ($key:ty, $index_bits:expr, $generation_bits:expr) => {
        impl $crate::SlotKey for $key {
            const INDEX_BITS: u32 = $index_bits;
            const GENERATION_BITS: u32 = $generation_bits;
            fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
            fn raw(self) -> u64 {
                self.0
            }
        }
    };
}

/// 16 index bits, 16 generation bits: 65,535 live records, each slot used 65,536 times.
impl SlotKey for u32 {
    const INDEX_BITS: u32 = 16;
    const GENERATION_BITS: u32 = 16;
    fn from_raw(raw: u64) -> Self {
        raw as u32
    }
    fn raw(self) -> u64 {
        u64::from(self)
    }
}

struct Slot<T> {
    /// The raw key of the slot's record, or while it is vacant the key its next record gets:
    /// a lookup compares one word.
    key: u64,
    value: Option<T>,
}

/// Records of type `T` under keys of type `K`.
pub struct SlotTable<K: SlotKey, T> {
    slots: Vec<Slot<T>>,
    /// Vacant slots that may be reused, most recently vacated last.
    free: Vec<u32>,
    live: usize,
    _key: PhantomData<K>,
}

impl<K: SlotKey, T> Default for SlotTable<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: SlotKey, T> SlotTable<K, T> {
    const INDEX_MASK: u64 = (1 << K::INDEX_BITS) - 1;
    const MAX_GENERATION: u64 = (1 << K::GENERATION_BITS) - 1;

    /// An empty table.
    pub const fn new() -> Self {
        SlotTable { slots: Vec::new(), free: Vec::new(), live: 0, _key: PhantomData }
    }

    fn raw_key(index: usize, generation: u64) -> u64 {
        generation << K::INDEX_BITS | index as u64
    }

    fn index(raw: u64) -> usize {
        (raw & Self::INDEX_MASK) as usize
    }

    /// The key the next [`insert`](Self::insert) will return; `None` when every slot is live or
    /// retired.
    pub fn next_key(&self) -> Option<K> {
        match self.free.last() {
            Some(&index) => Some(K::from_raw(self.slots[index as usize].key)),
            // Slot 0 is never used: a fresh table starts at index 1.
            None => {
                let index = self.slots.len().max(1);
                (index as u64 <= Self::INDEX_MASK).then(|| K::from_raw(Self::raw_key(index, 0)))
            }
        }
    }

    /// Stores `value` under [`next_key`](Self::next_key); `None` (and `value` dropped) when
    /// the table is full.
    pub fn insert(&mut self, value: T) -> Option<K> {
        let key = self.next_key()?;
        let index = Self::index(key.raw());
        if self.free.pop().is_none() {
            if self.slots.is_empty() {
                // Slot 0, retired from the start: it never holds a record, so key 0 finds none.
                self.slots.push(Slot { key: 0, value: None });
            }
            self.slots.push(Slot { key: key.raw(), value: None });
        }
        self.slots[index].value = Some(value);
        self.live += 1;
        Some(key)
    }

    /// The record under `key`, if it is live.
    #[inline]
    pub fn get(&self, key: K) -> Option<&T> {
        let raw = key.raw();
        self.slots.get(Self::index(raw)).filter(|slot| slot.key == raw)?.value.as_ref()
    }

    /// The record under `key`, mutably, if it is live.
    #[inline]
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let raw = key.raw();
        self.slots.get_mut(Self::index(raw)).filter(|slot| slot.key == raw)?.value.as_mut()
    }

    /// Whether `key` names a live record.
    pub fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Removes and returns the record under `key`; its key is dead from now on.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let raw = key.raw();
        let index = Self::index(raw);
        let slot = self.slots.get_mut(index).filter(|slot| slot.key == raw)?;
        let value = slot.value.take()?;
        self.live -= 1;
        let generation = raw >> K::INDEX_BITS;
        if generation < Self::MAX_GENERATION {
            slot.key = Self::raw_key(index, generation + 1);
            self.free.push(index as u32);
        }
        Some(value)
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live records with their keys, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.value.as_ref().map(|value| (K::from_raw(slot.key), value)))
    }

    /// Live records, mutably, with their keys, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|slot| slot.value.as_mut().map(|value| (K::from_raw(slot.key), value)))
    }

    /// Keys of the live records, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(key, _)| key)
    }

    /// Live records, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// Live records, mutably, in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.iter_mut().map(|(_, value)| value)
    }

    /// Keeps the records for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(K, &mut T) -> bool) {
        let doomed: Vec<K> = self.iter_mut().filter_map(|(key, value)| (!keep(key, value)).then_some(key)).collect();
        for key in doomed {
            self.remove(key);
        }
    }
}

impl<K: SlotKey, T> core::ops::Index<K> for SlotTable<K, T> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        self.get(key).expect("no live record under this key")
    }
}

#[cfg(test)]
mod tests;
