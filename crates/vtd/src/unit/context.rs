//! Root, context and PASID tables: attaching and detaching requesters and PASIDs.
//!
//! # Replacing entries: "blocked, never wrong"
//! Context, PASID and interrupt-remapping entries are 128 to 512 bits, wider than any single
//! store this driver can rely on. Following the spec's guidance for modifying present entries
//! (6.5.3.3, 9.x), a present entry is replaced by: clearing it (the 64-bit word holding
//! Present first), invalidating every cache that may hold it or translations derived from it
//! (context or PASID cache, then IOTLB or PASID-IOTLB for the old domain-id, then the
//! device-TLB), and only then writing the new entry with [`crate::dma::DmaTable::publish`]
//! (Present last). In the window between the clear and the publish the device's DMA faults:
//! it is blocked, but it is never translated with a mix of old and new fields nor by a stale
//! cached copy. Interrupt-remapping entries follow the same pattern; an interrupt raised in
//! that window is lost (fault 22h), so callers reprogram an IRTE with the source masked.
//!
//! # Caching mode
//! With CAP.CM=1 (QEMU `caching-mode=on`) hardware may cache not-present entries, so making an
//! entry present is followed by the invalidations Linux also issues (context-cache
//! device-selective with domain-id 0 and domain IOTLB; or PASID cache + PASID-IOTLB), and
//! [`VtdUnit::caching_mode`] tells the map path it must flush after creating mappings too.
//!
//! # Scalable mode layout
//! Each attached requester gets a context entry pointing at a one-page PASID directory (512
//! entries, PDTS=2), so PASIDs below [`MAX_PASID`](super::MAX_PASID) are supported. Untagged DMA uses PASID
//! [`RID_PASID`] = 0, named by the context entry's RID_PASID field. QEMU 10.0.2 rejects nested
//! PGTT (the entry faults with 5Bh); the driver still programs it per spec 9.6 for hardware
//! that has ECAP.NEST.

use alloc::vec::Vec;

use hwio::{Clock, DmaAllocator, Registers};

use super::flush::device_tlb_request;
use super::{
    Mode, Translation, VtdUnit, DIRECTORY_ENTRIES_LOG2, LEGACY_CONTEXT_ENTRY_BYTES, PAGE, PASID_ENTRY_BYTES, RID_PASID,
    SCALABLE_CONTEXT_ENTRY_BYTES,
};
use crate::descriptors::{Invalidation, DEVICE_TLB_ALL};
use crate::dma::DmaTable;
use crate::tables::{
    ContextEntry, HardwareEntry, LegacyTranslationType, PasidDirectoryEntry, PasidEntry, PasidTranslationType,
    RootEntry, ScalableContextEntry, ScalableRootEntry, PASIDS_PER_TABLE,
};
use crate::{RequesterId, VtdError};

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Context table for (bus, half), created and hooked into the root table on first use.
    fn context_table<A: DmaAllocator>(&mut self, bus: u8, half: u8, alloc: &mut A) -> Result<(), VtdError> {
        if self.context_tables.contains_key(&(bus, half)) {
            return Ok(());
        }
        let mode = self.require_mode()?;
        let table = DmaTable::allocate(alloc, PAGE, self.hw.coherent())?;
        let root = self.root.as_ref().ok_or(VtdError::NotInitialized)?;
        let root_offset = bus as usize * 16;
        match mode {
            Mode::Legacy => root.publish(alloc, root_offset, &RootEntry::new(table.phys()))?,
            // Scalable root entries have one present bit per half; the half is one 64-bit store
            // and the other half is left untouched.
            Mode::Scalable => {
                let entry = if half == 0 {
                    ScalableRootEntry::new(Some(table.phys()), None)
                } else {
                    ScalableRootEntry::new(None, Some(table.phys()))
                };
                let word = ScalableRootEntry::word_for(half << 7);
                let word_offset = root_offset + word * 8;
                root.write_word(word_offset, entry.words[word]);
                root.flush(alloc, word_offset, 8);
            }
        }
        self.context_tables.insert((bus, half), table);
        Ok(())
    }

    /// Follow-up for an entry that just became present: in caching mode hardware may hold a
    /// cached not-present copy, so `caching_mode_batch` is issued; otherwise only the write
    /// buffer needs flushing (when CAP.RWBF).
    fn after_present<A: DmaAllocator>(&mut self, caching_mode_batch: &[Invalidation], alloc: &A) -> Result<(), VtdError> {
        if self.hw.cap.caching_mode() {
            self.hw.invalidate(alloc, caching_mode_batch)
        } else {
            self.hw.flush_write_buffer()
        }
    }

    fn device_tlb_enabled(&self, requester: RequesterId) -> bool {
        self.devices.get(&requester.0).is_some_and(|device| device.device_tlb)
    }

    pub(super) fn attach_legacy<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let kind_for_tables = if self.device_tlb_enabled(requester) {
            LegacyTranslationType::WithDeviceTlb
        } else {
            LegacyTranslationType::Untranslated
        };
        let entry = match translation {
            Translation::SecondLevel { root, levels } => ContextEntry::new(kind_for_tables, root, levels, did),
            Translation::PassThrough => {
                ContextEntry::new(LegacyTranslationType::PassThrough, 0, self.hw.pass_through_levels(), did)
            }
            Translation::SecondLevelTracked { .. } => {
                return Err(VtdError::Unsupported("second-level dirty tracking needs scalable mode"))
            }
            Translation::FirstLevel { .. } | Translation::Nested { .. } => {
                return Err(VtdError::Unsupported("first-level and nested translation need scalable mode"))
            }
        };
        self.context_table(requester.bus(), 0, alloc)?;
        self.retire_legacy_context(requester, alloc)?;
        let table = &self.context_tables[&(requester.bus(), 0)];
        table.publish(alloc, requester.devfn() as usize * LEGACY_CONTEXT_ENTRY_BYTES, &entry)?;
        self.devices.entry(requester.0).or_default().legacy_did = Some(did);
        // Linux's caching-mode sequence: not-present entries are cached under domain-id 0.
        let caching_mode_batch =
            [Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }, Invalidation::IotlbDomain { did }];
        self.after_present(&caching_mode_batch, alloc)
    }

    /// Clears a present legacy context entry and invalidates everything derived from it.
    /// Returns whether there was one.
    fn retire_legacy_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &A) -> Result<bool, VtdError> {
        let Some(table) = self.context_tables.get(&(requester.bus(), 0)) else {
            return Ok(false);
        };
        let offset = requester.devfn() as usize * LEGACY_CONTEXT_ENTRY_BYTES;
        let old: ContextEntry = table.read_entry(offset);
        if !old.is_present() {
            return Ok(false);
        }
        table.clear(alloc, offset, ContextEntry::WORDS);
        let did = old.domain_id();
        let mut batch = Vec::from([
            Invalidation::ContextDevice { did, source: requester.0, function_mask: 0 },
            Invalidation::IotlbDomain { did },
        ]);
        if old.translation_type() == LegacyTranslationType::WithDeviceTlb as u64 {
            batch.push(Invalidation::DeviceTlb {
                source: requester.0,
                physical_function: requester.0,
                queue_depth: 0,
                range: DEVICE_TLB_ALL,
            });
        }
        self.hw.flush_write_buffer()?;
        self.hw.invalidate(alloc, &batch)?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            device.legacy_did = None;
        }
        Ok(true)
    }

    pub(super) fn detach_legacy<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        if self.retire_legacy_context(requester, alloc)? {
            Ok(())
        } else {
            Err(VtdError::NotAttached)
        }
    }

    /// Makes the requester's scalable context entry (and its PASID directory) present.
    fn scalable_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        let half = requester.devfn() >> 7;
        self.context_table(requester.bus(), half, alloc)?;
        let offset = (requester.devfn() & 0x7f) as usize * SCALABLE_CONTEXT_ENTRY_BYTES;
        let table = &self.context_tables[&(requester.bus(), half)];
        if table.read_entry::<ScalableContextEntry>(offset).is_present() {
            return Ok(());
        }
        let device = self.devices.entry(requester.0).or_default();
        let directory = DmaTable::allocate(alloc, PAGE, self.hw.ecap.coherent())?;
        let mut entry = ScalableContextEntry::new(
            directory.phys(),
            DIRECTORY_ENTRIES_LOG2,
            RID_PASID,
            self.hw.ecap.pasid(),
            device.device_tlb,
        );
        entry.set_page_requests_enabled(self.page_requests.is_some());
        table.publish(alloc, offset, &entry)?;
        device.pasid_directory = Some(directory);
        self.after_present(&[Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }], alloc)
    }

    /// Makes sure the PASID table serving `pasid` exists and is named by the directory.
    fn pasid_table<A: DmaAllocator>(&mut self, requester: RequesterId, pasid: u32, alloc: &mut A) -> Result<(), VtdError> {
        let coherent = self.hw.ecap.coherent();
        let device = self.devices.get_mut(&requester.0).ok_or(VtdError::NotAttached)?;
        let directory_index = pasid / PASIDS_PER_TABLE;
        if device.pasid_tables.contains_key(&directory_index) {
            return Ok(());
        }
        let directory = device.pasid_directory.as_ref().ok_or(VtdError::NotAttached)?;
        let table = DmaTable::allocate(alloc, PAGE, coherent)?;
        directory.publish(alloc, directory_index as usize * 8, &PasidDirectoryEntry::new(table.phys()))?;
        device.pasid_tables.insert(directory_index, table);
        Ok(())
    }

    fn pasid_entry_for(&self, did: u16, translation: Translation) -> PasidEntry {
        let entry = match translation {
            Translation::SecondLevel { root, levels } => PasidEntry::second_level(did, root, levels),
            Translation::SecondLevelTracked { root, levels } => PasidEntry::second_level_tracked(did, root, levels),
            Translation::FirstLevel { root, five_level } => PasidEntry::first_level(did, root, five_level),
            Translation::Nested { first_level_root, five_level, second_level_root, second_level_levels } => {
                PasidEntry::nested(did, first_level_root, five_level, second_level_root, second_level_levels)
            }
            Translation::PassThrough => PasidEntry::pass_through(did, self.hw.pass_through_levels()),
        };
        if self.hw.ecap.scalable_walk_coherent() {
            entry.with_page_walk_snoop()
        } else {
            entry
        }
    }

    pub(super) fn write_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        did: u16,
        translation: Translation,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        let entry = self.pasid_entry_for(did, translation);
        self.scalable_context(requester, alloc)?;
        self.pasid_table(requester, pasid, alloc)?;
        self.retire_pasid_entry(requester, pasid, alloc)?;
        let device = self.devices.get_mut(&requester.0).ok_or(VtdError::NotAttached)?;
        let table = &device.pasid_tables[&(pasid / PASIDS_PER_TABLE)];
        table.publish(alloc, (pasid % PASIDS_PER_TABLE) as usize * PASID_ENTRY_BYTES, &entry)?;
        device.pasids.insert(pasid, did);
        self.after_present(
            &[Invalidation::PasidCachePasid { did, pasid }, Invalidation::PasidIotlbAll { did, pasid }],
            alloc,
        )
    }

    /// Clears a present PASID entry and invalidates per the spec's guidance for PASID-entry
    /// changes (6.5.3.3): PASID cache, then IOTLB (domain-selective for second-level and
    /// pass-through entries, PASID-based otherwise), then the device-TLB.
    fn retire_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        alloc: &A,
    ) -> Result<bool, VtdError> {
        let Some(device) = self.devices.get(&requester.0) else {
            return Ok(false);
        };
        let Some(table) = device.pasid_tables.get(&(pasid / PASIDS_PER_TABLE)) else {
            return Ok(false);
        };
        let offset = (pasid % PASIDS_PER_TABLE) as usize * PASID_ENTRY_BYTES;
        let old: PasidEntry = table.read_entry(offset);
        if !old.is_present() {
            return Ok(false);
        }
        table.clear(alloc, offset, PasidEntry::WORDS);
        let did = old.domain_id();
        let mut batch = Vec::from([Invalidation::PasidCachePasid { did, pasid }]);
        let second_level_tagged = old.translation_type() == PasidTranslationType::SecondLevel as u64
            || old.translation_type() == PasidTranslationType::PassThrough as u64;
        batch.push(if second_level_tagged {
            Invalidation::IotlbDomain { did }
        } else {
            Invalidation::PasidIotlbAll { did, pasid }
        });
        if device.device_tlb {
            batch.push(device_tlb_request(requester, pasid, DEVICE_TLB_ALL));
        }
        self.hw.flush_write_buffer()?;
        self.hw.invalidate(alloc, &batch)?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            device.pasids.remove(&pasid);
        }
        Ok(true)
    }

    pub(super) fn remove_pasid_entry<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: u32,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        if !self.retire_pasid_entry(requester, pasid, alloc)? {
            return Err(VtdError::NotAttached);
        }
        if self.devices.get(&requester.0).is_some_and(|device| !device.is_attached()) {
            self.release_scalable_context(requester, alloc)?;
        }
        Ok(())
    }

    /// Clears the requester's scalable context entry once no PASID is attached, then frees its
    /// PASID directory and tables (after the context-cache invalidation, so hardware can no
    /// longer reach them).
    fn release_scalable_context<A: DmaAllocator>(&mut self, requester: RequesterId, alloc: &mut A) -> Result<(), VtdError> {
        let half = requester.devfn() >> 7;
        let offset = (requester.devfn() & 0x7f) as usize * SCALABLE_CONTEXT_ENTRY_BYTES;
        if let Some(table) = self.context_tables.get(&(requester.bus(), half)) {
            table.clear(alloc, offset, ScalableContextEntry::WORDS);
        }
        self.hw.flush_write_buffer()?;
        // Scalable context-cache entries are not tagged by domain-id; the DID field is unused.
        self.hw.invalidate(alloc, &[Invalidation::ContextDevice { did: 0, source: requester.0, function_mask: 0 }])?;
        if let Some(device) = self.devices.get_mut(&requester.0) {
            let tables = core::mem::take(&mut device.pasid_tables);
            for table in tables.into_values() {
                table.free(alloc);
            }
            if let Some(directory) = device.pasid_directory.take() {
                directory.free(alloc);
            }
        }
        Ok(())
    }
}
