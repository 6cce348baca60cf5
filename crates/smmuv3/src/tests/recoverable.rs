//! The PRI queue and stalls, driver against the model configured with them (QEMU has
//! neither), and CD tables with substreams.

use super::support::*;
use crate::model::{Access, ModelConfig, PriResponseRecord};
use crate::pri::{PageRequest, PriResponse, ResumeAction};
use crate::regs::Granule;
use crate::smmu::{CdTableLayout, SmmuOptions};
use crate::{EventType, SmmuError, Stage1Config};

const SID: u32 = 0x0008;
const DATA: u64 = MEM_BASE + (20 << 20);

/// QEMU's SMMU with IDR0.PRI, STALL_MODEL 0b00, a PRI queue of up to 2^8 entries, 8-bit
/// SubstreamIDs and two-level CD tables.
fn full_config() -> ModelConfig {
    let mut config = ModelConfig::qemu();
    config.idr[0] = (config.idr[0] & !(0b11 << 24)) | 1 << 16 | 1 << 19;
    config.idr[1] |= 8 << 11 | 8 << 6;
    config
}

fn request(group: u16, last: bool) -> PageRequest {
    PageRequest { stream_id: SID, substream_id: None, address: 0x8000_0000, read: true, write: false, last, group }
}

/// A PRI queue of two entries: the third request overflows (OVFLG), the SMMU answers its
/// group itself, the drain reports the overflow once and acknowledges it.
#[test]
fn the_pri_queue_drains_in_order_and_reports_overflow_once() {
    let mut rig = Rig::with(full_config(), SmmuOptions::default()).unwrap();
    let (smmu, mut env) = rig.parts();
    smmu.set_bypass(&mut env, SID).unwrap();
    smmu.enable_page_requests(&mut env, 1).unwrap();
    assert!(matches!(smmu.enable_page_requests(&mut env, 1), Err(SmmuError::InvalidConfig(_))));
    let model = rig.model();
    assert!(model.page_request(request(1, false)));
    assert!(model.page_request(request(1, true)));
    assert!(!model.page_request(request(2, true)), "a full queue took a request");
    assert_eq!(model.pri_responses(), vec![PriResponseRecord { stream_id: SID, substream_id: None, group: 2, response: 2, from_smmu: true }]);
    let drain = rig.smmu.drain_page_requests();
    assert_eq!((drain.requests, drain.overflowed), (vec![request(1, false), request(1, true)], true));
    let again = rig.smmu.drain_page_requests();
    assert_eq!((again.requests.len(), again.overflowed), (0, false), "the overflow was not acknowledged");
    let (smmu, mut env) = rig.parts();
    smmu.respond_to_page_group(&mut env, SID, None, 1, PriResponse::Deny).unwrap();
    assert_eq!(rig.model().pri_responses()[1], PriResponseRecord { stream_id: SID, substream_id: None, group: 1, response: 0, from_smmu: false });
}

/// On QEMU's SMMU (no PRI, no stalls) both are refused, and a page request is denied by the
/// SMMU itself.
#[test]
fn qemu_has_neither_pri_nor_stalls() {
    let mut rig = Rig::new();
    let (smmu, mut env) = rig.parts();
    assert!(matches!(smmu.enable_page_requests(&mut env, 8), Err(SmmuError::Unsupported(_))));
    assert!(matches!(smmu.set_stall(&mut env, SID, true), Err(SmmuError::Unsupported(_))));
    assert!(!rig.model().page_request(request(3, true)));
    assert_eq!(rig.model().pri_responses()[0].response, PriResponse::Deny as u8);
}

/// A stage-1 fault of a stream with CD.S stalls: recorded with Stall and a STAG, resumed with
/// Retry after the page is mapped, and the retried translation succeeds; Terminate ends
/// another; with CD.S clear again a fault aborts at once.
#[test]
fn a_stalled_transaction_waits_for_resume() {
    let mut rig = Rig::with(full_config(), SmmuOptions::default()).unwrap();
    let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
    let root = tables.alloc(4096);
    let (smmu, mut env) = rig.parts();
    let asid = smmu.alloc_asid().unwrap();
    smmu.attach_stage1(&mut env, SID, &Stage1Config::new(asid, root, 25, Granule::Size4K)).unwrap();
    smmu.set_stall(&mut env, SID, true).unwrap();
    let stalled = rig.model().translate(SID, None, 0x8000_0010, Access::Write).unwrap_err().event.expect("a stall is recorded");
    assert!(stalled.stall());
    let events = rig.smmu.drain_events().events;
    assert_eq!((events[0].kind, events[0].stall_tag), (EventType::Translation, Some(stalled.stag() as u16)));
    assert_eq!(rig.model().stalled_transactions(), 1);

    tables.map(root, 1, 39, 0x8000_0000, DATA, S1_RW);
    let (smmu, mut env) = rig.parts();
    smmu.resume_stalled(&mut env, SID, stalled.stag() as u16, ResumeAction::Retry).unwrap();
    assert_eq!(rig.model().stall_resolution(stalled.stag() as u16), Some(ResumeAction::Retry as u8));
    assert_eq!(rig.model().translate(SID, None, 0x8000_0010, Access::Write), Ok(DATA + 0x10));

    let other = rig.model().translate(SID, None, 0x9000_0000, Access::Read).unwrap_err().event.unwrap();
    let (smmu, mut env) = rig.parts();
    smmu.resume_stalled(&mut env, SID, other.stag() as u16, ResumeAction::Terminate).unwrap();
    assert_eq!(rig.model().stall_resolution(other.stag() as u16), Some(ResumeAction::Terminate as u8));
    assert_eq!(rig.model().stalled_transactions(), 0);
    // Stalls off again: the fault aborts at once.
    let (smmu, mut env) = rig.parts();
    smmu.set_stall(&mut env, SID, false).unwrap();
    assert!(!rig.model().translate(SID, None, 0x9000_0000, Access::Read).unwrap_err().event.unwrap().stall());
}

/// Substreams, linear and two-level: each SubstreamID its CD, CD 0 for traffic without one; an
/// invalid CD is C_BAD_CD, a SubstreamID beyond the table C_BAD_SUBSTREAMID; attaching a
/// single CD again takes the table away.
#[test]
fn substreams_each_have_their_cd() {
    for layout in [CdTableLayout::Linear, CdTableLayout::TwoLevel] {
        let mut rig = Rig::with(full_config(), SmmuOptions::default()).unwrap();
        let tables = PageTables::new(&rig.memory, TABLES_BASE, 0);
        let (own, tagged) = (tables.alloc(4096), tables.alloc(4096));
        tables.map(own, 1, 39, 0x8000_0000, DATA, S1_RW);
        tables.map(tagged, 1, 39, 0x8000_0000, DATA + 0x1000, S1_RW);
        let (smmu, mut env) = rig.parts();
        assert!(matches!(smmu.attach_substreams(&mut env, SID, 9, layout, None), Err(SmmuError::Unsupported(_))), "beyond SSIDSIZE");
        smmu.attach_substreams(&mut env, SID, 7, layout, Some(&Stage1Config::new(1, own, 25, Granule::Size4K))).unwrap();
        smmu.set_substream(&mut env, SID, 100, Some(&Stage1Config::new(2, tagged, 25, Granule::Size4K))).unwrap();
        let model = rig.model();
        assert_eq!(model.translate(SID, None, 0x8000_0008, Access::Read), Ok(DATA + 8), "{layout:?}");
        assert_eq!(model.translate(SID, Some(100), 0x8000_0008, Access::Read), Ok(DATA + 0x1008));
        assert_eq!(model.translate(SID, Some(101), 0x8000_0008, Access::Read).unwrap_err().event.unwrap().event_type(), EventType::BadCd);
        assert_eq!(model.translate(SID, Some(128), 0x8000_0008, Access::Read).unwrap_err().event.unwrap().event_type(), EventType::BadSubstreamId);
        let (smmu, mut env) = rig.parts();
        smmu.set_substream(&mut env, SID, 100, None).unwrap();
        assert_eq!(rig.model().translate(SID, Some(100), 0x8000_0008, Access::Read).unwrap_err().event.unwrap().event_type(), EventType::BadCd);
        // Back to a single CD: the table goes, substream traffic is refused.
        let (smmu, mut env) = rig.parts();
        smmu.attach_stage1(&mut env, SID, &Stage1Config::new(1, own, 25, Granule::Size4K)).unwrap();
        assert!(!smmu.has_substreams(SID));
        assert_eq!(rig.model().translate(SID, Some(1), 0x8000_0008, Access::Read).unwrap_err().event.unwrap().event_type(), EventType::BadSubstreamId);
    }
}
