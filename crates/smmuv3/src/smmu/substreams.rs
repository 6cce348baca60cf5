//! Streams with substreams (PASIDs): the STE points at a table of context descriptors indexed
//! by SubstreamID (S1CDMax > 0), linear (S1Fmt = 0b00) or two-level with 4 KiB leaf tables of
//! 64 CDs (S1Fmt = 0b01, needs IDR0.CD2L). Traffic without a SubstreamID uses CD 0
//! (S1DSS = 0b10). QEMU 10.0.2 has no substreams (IDR1.SSIDSIZE = 0); the model has them when
//! configured with a SSIDSIZE.
//!
//! A live CD is changed as a live STE is (module docs of `smmu`): V cleared first, CMD_CFGI_CD
//! and CMD_SYNC, then the other words, then word 0 with V set, then CMD_CFGI_CD and CMD_SYNC:
//! the substream is blocked for a moment, never translated by half a descriptor.

use alloc::collections::BTreeMap;

use hwio::{address_fields, flag_fields, DmaBuffer, Registers};

use super::{Env, Smmu};
use crate::cd::ContextDescriptor;
use crate::cmd::Command;
use crate::config::Stage1Config;
use crate::dma::{self, alloc_aligned, publish_to_device, read_word, write_words};
use crate::error::SmmuError;
use crate::ste::{DefaultSubstream, StreamConfig};

/// CDs per 4 KiB leaf table of a two-level CD table.
const CDS_PER_LEAF_LOG2: u32 = 6;

/// How a stream's CD table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdTableLayout {
    /// One contiguous array of 2^S1CDMax CDs (S1Fmt = 0b00).
    Linear,
    /// An array of level-1 descriptors, each naming a 4 KiB table of 64 CDs (S1Fmt = 0b01),
    /// allocated when a substream in it is first set.
    TwoLevel,
}

/// Level-1 context descriptor of a two-level CD table (spec 5.4.2), 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CdL1Descriptor {
    pub words: [u64; 1],
}

impl CdL1Descriptor {
    flag_fields! {
        /// V (bit 0).
        valid, set_valid: word 0, bit 0;
    }
    address_fields! {
        /// L2Ptr (bits [51:12]): the leaf table of 64 CDs.
        l2_ptr, set_l2_ptr: word 0, bits 51:12;
    }
}

pub(super) struct CdTable {
    layout: CdTableLayout,
    log2_entries: u32,
    /// The linear table or the level-1 table.
    pub(super) root: DmaBuffer,
    /// Two-level: leaf tables by level-1 index.
    pub(super) leaves: BTreeMap<u32, DmaBuffer>,
}

impl<R: Registers> Smmu<R> {
    /// Gives `sid` a table of 2^`log2_entries` CDs (at most IDR1.SSIDSIZE bits) in `layout`,
    /// substream 0 (traffic without a SubstreamID) translated by `default` if given, every
    /// other substream invalid (C_BAD_CD on use). Replaces whatever `sid` had.
    pub fn attach_substreams(&mut self, env: &mut Env<'_>, sid: u32, log2_entries: u32, layout: CdTableLayout, default: Option<&Stage1Config>) -> Result<(), SmmuError> {
        if log2_entries == 0 || log2_entries > self.id.ssid_bits() {
            return Err(SmmuError::Unsupported("substreams beyond IDR1.SSIDSIZE"));
        }
        if layout == CdTableLayout::TwoLevel && !self.id.cd_two_level() {
            return Err(SmmuError::Unsupported("two-level CD tables (IDR0.CD2L)"));
        }
        let root_bytes = match layout {
            CdTableLayout::Linear => ContextDescriptor::SIZE << log2_entries,
            CdTableLayout::TwoLevel => 8 << log2_entries.saturating_sub(CDS_PER_LEAF_LOG2),
        };
        let root = alloc_aligned(env.dma, root_bytes)?;
        dma::flush(&*env.dma, &root, 0, root.size);
        let mut table = CdTable { layout, log2_entries, root, leaves: BTreeMap::new() };
        if let Some(cfg) = default {
            cfg.validate(&self.id)?;
            let cd = ContextDescriptor::for_stage1(cfg, cfg.effective_output_bits(&self.id), self.walk);
            let (buf, off) = self.cd_slot(env, &mut table, 0)?;
            write_words(&*env.dma, &buf, off, &cd.words);
        }
        let mut ste = self.stage1_ste_base(StreamConfig::Stage1);
        let s1_fmt = match layout {
            CdTableLayout::Linear => 0b00,
            CdTableLayout::TwoLevel => 0b01,
        };
        ste.set_s1_fmt(s1_fmt)
            .set_s1_cd_max(log2_entries as u64)
            .set_s1dss(DefaultSubstream::Substream0 as u64)
            .set_s1_context_ptr(table.root.phys)
            .set_s2vmid(super::STAGE1_ONLY_VMID as u64);
        publish_to_device();
        let root_phys = table.root.phys;
        if let Err(error) = self.install_ste(env, sid, ste, None) {
            // The STE may or may not point at the table now: keep it alive either way.
            self.cd_tables.insert(sid, table);
            return Err(error);
        }
        debug_assert_eq!(self.ste(sid).map(|ste| ste.s1_context_ptr()), Some(root_phys));
        self.cd_tables.insert(sid, table);
        Ok(())
    }

    /// Points substream `ssid` of a stream with substreams at `cfg`, or makes it invalid
    /// (`None`), with the ordered update the module docs describe.
    pub fn set_substream(&mut self, env: &mut Env<'_>, sid: u32, ssid: u32, cfg: Option<&Stage1Config>) -> Result<(), SmmuError> {
        let cd = match cfg {
            Some(cfg) => {
                cfg.validate(&self.id)?;
                Some(ContextDescriptor::for_stage1(cfg, cfg.effective_output_bits(&self.id), self.walk))
            }
            None => None,
        };
        let mut table = self.cd_tables.remove(&sid).ok_or(SmmuError::InvalidConfig("the stream has no substreams"))?;
        let result = self.write_substream(env, &mut table, sid, ssid, cd);
        self.cd_tables.insert(sid, table);
        result
    }

    fn write_substream(&mut self, env: &mut Env<'_>, table: &mut CdTable, sid: u32, ssid: u32, cd: Option<ContextDescriptor>) -> Result<(), SmmuError> {
        if ssid >> table.log2_entries != 0 {
            return Err(SmmuError::InvalidConfig("SubstreamID beyond the stream's CD table"));
        }
        if cd.is_none() && table.layout == CdTableLayout::TwoLevel && !table.leaves.contains_key(&(ssid >> CDS_PER_LEAF_LOG2)) {
            return Ok(());
        }
        let (buf, off) = self.cd_slot(env, table, ssid)?;
        let mut current = ContextDescriptor::default();
        current.words[0] = read_word(&buf, off);
        if current.valid() {
            current.set_valid(false);
            write_words(&*env.dma, &buf, off, &current.words[..1]);
            publish_to_device();
            self.execute(env, &[Command::cfgi_cd(sid, ssid, false)])?;
        }
        let Some(cd) = cd else { return Ok(()) };
        write_words(&*env.dma, &buf, off + 8, &cd.words[1..]);
        publish_to_device();
        write_words(&*env.dma, &buf, off, &cd.words[..1]);
        publish_to_device();
        self.execute(env, &[Command::cfgi_cd(sid, ssid, false)])
    }

    /// Where the CD of `ssid` lives: (buffer, byte offset), creating its leaf table (and
    /// publishing its level-1 descriptor) if needed.
    fn cd_slot(&mut self, env: &mut Env<'_>, table: &mut CdTable, ssid: u32) -> Result<(DmaBuffer, usize), SmmuError> {
        match table.layout {
            CdTableLayout::Linear => Ok((table.root, ssid as usize * ContextDescriptor::SIZE)),
            CdTableLayout::TwoLevel => {
                let index = ssid >> CDS_PER_LEAF_LOG2;
                let leaf = match table.leaves.get(&index) {
                    Some(leaf) => *leaf,
                    None => {
                        let leaf = alloc_aligned(env.dma, ContextDescriptor::SIZE << CDS_PER_LEAF_LOG2)?;
                        dma::flush(&*env.dma, &leaf, 0, leaf.size);
                        publish_to_device();
                        let mut descriptor = CdL1Descriptor::default();
                        descriptor.set_l2_ptr(leaf.phys).set_valid(true);
                        write_words(&*env.dma, &table.root, index as usize * 8, &descriptor.words);
                        table.leaves.insert(index, leaf);
                        leaf
                    }
                };
                let offset = (ssid as usize & ((1 << CDS_PER_LEAF_LOG2) - 1)) * ContextDescriptor::SIZE;
                Ok((leaf, offset))
            }
        }
    }

    /// Whether `sid` has a CD table (substreams).
    pub fn has_substreams(&self, sid: u32) -> bool {
        self.cd_tables.contains_key(&sid)
    }
}

/// Frees a CD table the SMMU no longer references.
pub(super) fn release(dma: &mut dyn hwio::DmaAllocator, table: CdTable) {
    for leaf in table.leaves.into_values() {
        dma.free(leaf);
    }
    dma.free(table.root);
}
