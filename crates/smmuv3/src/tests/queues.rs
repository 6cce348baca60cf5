//! Command queue wrap and error recovery, event queue overflow, global errors, ASID/VMID ids.

use super::support::*;
use crate::cmd::{opcode, Command};
use crate::event::EventType;
use crate::model::{Access, CommandConsumption, ModelConfig};
use crate::regs::{CommandErrorCode, GlobalErrors, Granule};
use crate::smmu::{SmmuOptions, TlbScope};
use crate::{SmmuError, WaitTarget};

#[test]
fn command_queue_wraps_many_times_on_a_slow_smmu() {
    let config = ModelConfig { commands: CommandConsumption::PerConsRead(1), ..ModelConfig::qemu() };
    let options = SmmuOptions { cmdq_log2_cap: 2, ..SmmuOptions::default() };
    let mut rig = Rig::with(config, options).unwrap();
    assert_eq!(rig.smmu.command_queue_entries(), 4);
    let start = rig.model().executed_commands().len();
    let batch: Vec<Command> = (1..=10).map(|asid| Command::tlbi_nh_asid(0, asid)).collect();
    for _ in 0..3 {
        let (smmu, mut env) = rig.parts();
        smmu.execute(&mut env, &batch).unwrap();
    }
    // 3 x (10 TLBIs + CMD_SYNC) = 33 entries through a 4-entry queue, in order.
    let executed = &rig.model().executed_commands()[start..];
    assert_eq!(executed.len(), 33);
    for round in executed.chunks(11) {
        let asids: Vec<u64> = round[..10].iter().map(|c| c.asid()).collect();
        assert_eq!(asids, (1..=10).collect::<Vec<u64>>());
        assert_eq!(round[10].op(), opcode::SYNC);
    }
}

#[test]
fn rejected_command_is_skipped_and_the_queue_restarts() {
    let mut rig = Rig::new();
    let start = rig.model().executed_commands().len();
    let illegal = Command { words: [opcode::CFGI_VMS_PIDM as u64, 0] };
    let (smmu, mut env) = rig.parts();
    let result = smmu.execute(&mut env, &[Command::tlbi_nh_asid(0, 1), illegal, Command::tlbi_nh_asid(0, 2)]);
    let index = match result {
        Err(SmmuError::CommandRejected { opcode: 0x07, code: CommandErrorCode::Illegal, index }) => index,
        other => panic!("expected CERROR_ILL for opcode 0x07, got {other:?}"),
    };
    let executed = &rig.model().executed_commands()[start..];
    let ops: Vec<u8> = executed.iter().map(|c| c.op()).collect();
    // The bad entry ran as the CMD_SYNC that replaced it.
    assert_eq!(ops, [opcode::TLBI_NH_ASID, opcode::SYNC, opcode::TLBI_NH_ASID, opcode::SYNC]);
    assert_eq!(executed[2].asid(), 2);
    assert_eq!(index, 4, "bring-up used entries 0..=2, the first TLBI entry 3");
    let (smmu, mut env) = rig.parts();
    assert_eq!(smmu.sync(&mut env), Ok(()));
    assert!(smmu.check_gerror(&mut env).unwrap().active.is_empty());
}

#[test]
fn a_full_queue_on_a_hung_smmu_times_out() {
    let options = SmmuOptions { cmdq_log2_cap: 2, timeout_ns: 1_000_000, ..SmmuOptions::default() };
    // Per-page invalidations (no RIL): eight commands for a four-entry queue.
    let mut rig = Rig::without_range_invalidation(options);
    rig.model().set_command_consumption(CommandConsumption::Never);
    let (smmu, mut env) = rig.parts();
    let result = smmu.tlbi_range(&mut env, TlbScope::Stage1 { asid: 1 }, 0, 8 * 4096, Granule::Size4K, true);
    assert_eq!(result, Err(SmmuError::Timeout(WaitTarget::CommandQueueSpace)));
}

#[test]
fn event_queue_overflow_is_reported_and_acknowledged() {
    let options = SmmuOptions { eventq_log2_cap: 1, ..SmmuOptions::default() };
    let mut rig = Rig::with(ModelConfig::qemu(), options).unwrap();
    for sid in [0x100, 0x200, 0x300] {
        assert!(rig.model().translate(sid, None, 0, Access::Read).is_err());
    }
    assert_eq!(rig.model().lost_events(), 1);
    let first = rig.smmu.drain_events();
    assert!(first.overflowed);
    let sids: Vec<u32> = first.events.iter().map(|e| e.stream_id).collect();
    assert_eq!(sids, [0x100, 0x200]);
    assert_eq!(rig.smmu.event_overflow_count(), 1);
    // Acknowledged: new events are recorded and no overflow is reported again.
    assert!(rig.model().translate(0x400, None, 0, Access::Read).is_err());
    let second = rig.smmu.drain_events();
    assert!(!second.overflowed);
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.events[0].kind, EventType::BadStreamId);
    assert_eq!(second.events[0].stream_id, 0x400);
}

#[test]
fn global_errors_are_reported_once_and_acknowledged() {
    let mut rig = Rig::new();
    rig.model().raise_global_error(GlobalErrors::EVENTQ_ABT_ERR);
    let (smmu, mut env) = rig.parts();
    let report = smmu.check_gerror(&mut env).unwrap();
    assert_eq!(report.active.names().collect::<Vec<_>>(), ["EVENTQ_ABT_ERR"]);
    assert_eq!(report.rejected_command, None);
    assert!(smmu.check_gerror(&mut env).unwrap().active.is_empty());
    rig.model().raise_global_error(GlobalErrors::SFM_ERR);
    let (smmu, mut env) = rig.parts();
    assert_eq!(smmu.check_gerror(&mut env), Err(SmmuError::ServiceFailure));
}

#[test]
fn id_allocators_follow_idr0_and_invalidate_on_free() {
    let mut config = ModelConfig::qemu();
    config.idr[0] &= !(1 << 12 | 1 << 18); // 8-bit ASIDs and VMIDs
    let mut rig = Rig::with(config, SmmuOptions::default()).unwrap();
    let asids: Vec<u16> = core::iter::from_fn(|| rig.smmu.alloc_asid()).collect();
    assert_eq!(asids.len(), 255);
    assert_eq!(*asids.iter().max().unwrap(), 255);
    let (smmu, mut env) = rig.parts();
    assert_eq!(smmu.free_asid(&mut env, 42), Ok(true));
    assert_eq!(smmu.free_asid(&mut env, 42), Ok(false));
    let vmid = smmu.alloc_vmid().unwrap();
    assert_eq!(smmu.free_vmid(&mut env, vmid), Ok(true));
    let cmds = rig.model().executed_commands();
    let tail: Vec<(u8, u64, u64)> = cmds.iter().rev().take(4).map(|c| (c.op(), c.asid(), c.vmid())).collect();
    assert_eq!(
        tail,
        [
            (opcode::SYNC, 0, 0),
            (opcode::TLBI_S12_VMALL, 0, vmid as u64),
            (opcode::SYNC, 0, 0),
            (opcode::TLBI_NH_ASID, 42, 0)
        ]
    );
    assert_eq!(rig.smmu.alloc_asid(), Some(42));
}
