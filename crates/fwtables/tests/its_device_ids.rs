//! The DeviceID a PCI function's MSIs carry into the ITS, as the IORT describes it (what the
//! IOMMU server cross-checks against the device tree's `msi-map`).

use fwtables::iort::Iort;
use fwtables::testing::{iort, iort_nodes_ok, iort_offsets, its_group, range, root_complex, smmu_v3, Output};

#[test]
fn device_id_through_the_smmu_and_around_it() {
    // RIDs 0..0x100 go through the SMMU (StreamID = RID + 0x20, DeviceID = StreamID + 0x8000);
    // RIDs 0x100..0x200 go straight to the ITS (DeviceID = RID + 0x4000); none beyond.
    let nodes = vec![
        its_group(&[0]),
        smmu_v3(0x0905_0000).with(vec![range(0, 0x1_0000, 0x8000, Output::Node(0))]),
        root_complex(0).with(vec![range(0, 0x100, 0x20, Output::Node(1)), range(0x100, 0x100, 0x4100, Output::Node(0))]),
    ];
    let its = iort_offsets(&nodes)[0];
    let table = Iort::parse(&iort(&nodes)).unwrap();
    assert_eq!(table.its_device_id(0, 0x0010), Some((its, 0x8030)));
    assert_eq!(table.its_device_id(0, 0x0105), Some((its, 0x4105)));
    assert_eq!(table.its_device_id(0, 0x0200), None, "a RID with no mapping has no DeviceID");
    assert_eq!(table.its_device_id(1, 0x0010), None, "no root complex for segment 1");
}

#[test]
fn the_usual_shape_passes_the_rid_through() {
    let nodes = iort_nodes_ok();
    let table = Iort::parse(&iort(&nodes)).unwrap();
    assert_eq!(table.its_device_id(0, 0x0008), Some((iort_offsets(&nodes)[0], 0x0008)));
}

#[test]
fn an_smmu_that_sends_no_msis_gives_no_device_id() {
    // The SMMU's StreamIDs go nowhere further: the device's MSIs reach no ITS.
    let nodes = vec![its_group(&[0]), smmu_v3(0x0905_0000), root_complex(0).with(vec![range(0, 0x1_0000, 0, Output::Node(1))])];
    let table = Iort::parse(&iort(&nodes)).unwrap();
    assert_eq!(table.its_device_id(0, 0x0008), None);
}
