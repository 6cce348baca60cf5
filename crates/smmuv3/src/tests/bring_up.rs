//! Bring-up, default deny, stream table formats, timeouts and shutdown.

use super::support::*;
use crate::cmd::opcode;
use crate::event::EventType;
use crate::model::{Access, CommandConsumption, ModelConfig};
use crate::regs::{cr0, gbpa, offset, StreamTableFormat};
use crate::smmu::SmmuOptions;
use crate::{Env, Granule, SmmuError, Stage1Config, StreamConfig, WaitTarget};
use hwio::Registers;

#[test]
fn bring_up_enables_queues_and_translation_after_invalidating_everything() {
    let rig = Rig::new();
    let model = rig.model();
    assert_eq!(model.cr0(), cr0::SMMUEN | cr0::EVENTQEN | cr0::CMDQEN);
    assert_ne!(model.read32(offset::GBPA) & gbpa::ABORT, 0, "disabled SMMU must abort, not bypass");
    let ops: Vec<u8> = model.executed_commands().iter().map(|c| c.op()).collect();
    assert_eq!(ops, [opcode::CFGI_STE_RANGE, opcode::TLBI_NSNH_ALL, opcode::SYNC]);
    assert_eq!(model.executed_commands()[0].range(), 31, "CFGI_ALL covers every StreamID");
    assert_eq!(rig.smmu.stream_table_format(), StreamTableFormat::TwoLevel);
    assert_eq!(rig.smmu.stream_id_limit(), 1 << 16);
    assert_eq!(rig.smmu.command_queue_entries(), 256);
}

#[test]
fn two_level_table_denies_unknown_streams_with_bad_streamid_events() {
    let mut rig = Rig::new();
    let err = rig.model().translate(0x0010, None, 0x1000, Access::Read).unwrap_err();
    assert_eq!(err.event.map(|e| e.event_type()), Some(EventType::BadStreamId));
    let drained = rig.smmu.drain_events();
    assert!(!drained.overflowed);
    assert_eq!(drained.events.len(), 1);
    assert_eq!(drained.events[0].kind, EventType::BadStreamId);
    assert_eq!(drained.events[0].stream_id, 0x0010);
}

#[test]
fn linear_table_denies_every_stream_silently() {
    let options = SmmuOptions { force_linear_stream_table: true, ..SmmuOptions::default() };
    let mut rig = Rig::with(ModelConfig::qemu(), options).unwrap();
    assert_eq!(rig.smmu.stream_table_format(), StreamTableFormat::Linear);
    for sid in [0, 1, 0x0100, 0xFFFF] {
        assert_eq!(rig.model().translate(sid, None, 0x1000, Access::Write).unwrap_err().event, None);
        assert_eq!(rig.smmu.ste(sid).unwrap().config(), Some(StreamConfig::Abort));
    }
    assert!(rig.smmu.drain_events().events.is_empty(), "Config = abort records no event");
}

#[test]
fn level2_tables_are_created_lazily_full_of_abort_entries() {
    let mut rig = Rig::new();
    let before = rig.dma.live_allocations();
    assert_eq!(rig.smmu.ste(0x1234), None);
    let (smmu, mut env) = rig.parts();
    smmu.set_bypass(&mut env, 0x1234).unwrap();
    assert_eq!(rig.dma.live_allocations(), before + 1, "exactly one level-2 table");
    assert_eq!(rig.model().translate(0x1234, None, 0xABC000, Access::Read), Ok(0xABC000));
    // A neighbour in the same level-2 table is denied silently, another span with an event.
    assert_eq!(rig.model().translate(0x1235, None, 0, Access::Read).unwrap_err().event, None);
    let err = rig.model().translate(0x2000, None, 0, Access::Read).unwrap_err();
    assert_eq!(err.event.unwrap().event_type(), EventType::BadStreamId);
}

#[test]
fn stream_ids_beyond_the_table_are_refused_and_reported() {
    let mut rig = Rig::new();
    let (smmu, mut env) = rig.parts();
    assert_eq!(
        smmu.set_bypass(&mut env, 1 << 16),
        Err(SmmuError::StreamIdOutOfRange { sid: 1 << 16, limit: 1 << 16 })
    );
    // CR2.RECINVSID makes the SMMU record traffic from StreamIDs beyond SIDSIZE.
    let err = rig.model().translate(1 << 16, None, 0, Access::Read).unwrap_err();
    assert_eq!(err.event.unwrap().event_type(), EventType::BadStreamId);
}

#[test]
fn an_smmu_that_never_acknowledges_cr0_times_out() {
    let config = ModelConfig { acknowledge_cr0: false, ..ModelConfig::qemu() };
    let options = SmmuOptions { timeout_ns: 1_000_000, ..SmmuOptions::default() };
    assert_eq!(Rig::with(config, options).err(), Some(SmmuError::Timeout(WaitTarget::Cr0Ack)));
}

#[test]
fn an_smmu_that_never_consumes_commands_times_out_on_sync() {
    let config = ModelConfig { commands: CommandConsumption::Never, ..ModelConfig::qemu() };
    let options = SmmuOptions { timeout_ns: 1_000_000, ..SmmuOptions::default() };
    assert_eq!(Rig::with(config, options).err(), Some(SmmuError::Timeout(WaitTarget::CommandSync)));
}

#[test]
fn shutdown_disables_translation_and_frees_every_buffer() {
    let mut rig = Rig::new();
    let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
    let root = tables.alloc(4096);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, 3, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    smmu.set_bypass(&mut env, 0x0900).unwrap();
    let Rig { smmu, mut dma, clock, .. } = rig;
    let model = smmu.shutdown(&mut Env { dma: &mut dma, clock: &clock }).unwrap();
    assert_eq!(dma.live_allocations(), 0);
    assert_eq!(model.cr0(), 0);
    // Disabled with GBPA.ABORT: even the formerly bypassed stream is now blocked.
    assert_eq!(model.translate(0x0900, None, 0x1000, Access::Read).unwrap_err().event, None);
}
