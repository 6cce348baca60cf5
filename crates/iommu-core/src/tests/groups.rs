//! Isolation groups at bind: a group goes to one client. Another client's bind of any function
//! of a held group is refused with `IsolationGroupHeld` and changes nothing (the backend is not
//! even asked to block the device); the holder may bind several functions of its group; the
//! group is free again once the holder's devices are gone.

use super::*;

const GROUP: IsolationGroup = IsolationGroup(7);
const OTHER_GROUP: IsolationGroup = IsolationGroup(9);

fn bind_in(h: &mut Harness, client: ClientId, rid: RequesterId, group: IsolationGroup) -> Result<Handle, Error> {
    h.server.device_bind_in_group(client, DeviceGrant { unit: VTD, rid, pasid_bits: 0 }, Some(group))
}

#[test]
fn a_held_group_is_refused_to_another_client_and_nothing_changes() {
    let mut h = harness();
    let first = bind_in(&mut h, A, DEV, GROUP).expect("A binds the group's first function");
    h.clear_log();
    let before = h.server.state_digest();

    // Another function of the group (say, an ACS-less sibling); and the very requester ID A
    // holds (a function sharing its alias behind a PCIe-to-PCI bridge), which is the same
    // device to the IOMMU.
    assert_eq!(bind_in(&mut h, B, DEV2, GROUP), Err(Error::IsolationGroupHeld));
    assert_eq!(bind_in(&mut h, B, DEV, GROUP), Err(Error::DeviceAlreadyBound));
    assert_eq!(h.server.state_digest(), before, "a refused bind changed the model");
    assert_eq!(h.calls(), vec![], "a refused bind reached the backend");

    // The holder may bind more of its group; other groups stay open to everyone.
    let second = bind_in(&mut h, A, DEV2, GROUP).expect("A binds a second function of its group");
    bind_in(&mut h, B, SMMU_DEV, OTHER_GROUP).expect("B binds a device of another group");
    h.assert_clean();

    // The group is held until the holder's last device of it goes.
    h.server.destroy(A, first).unwrap();
    assert_eq!(bind_in(&mut h, B, DEV, GROUP), Err(Error::IsolationGroupHeld), "freed while A still held a function of it");
    h.server.destroy(A, second).unwrap();
    bind_in(&mut h, B, DEV, GROUP).expect("B binds the group A let go of");
    assert_eq!(bind_in(&mut h, A, DEV2, GROUP), Err(Error::IsolationGroupHeld), "now B holds it");
    h.assert_clean();
}

#[test]
fn a_closed_client_lets_its_groups_go() {
    let mut h = harness();
    bind_in(&mut h, A, DEV, GROUP).unwrap();
    assert_eq!(bind_in(&mut h, B, DEV2, GROUP), Err(Error::IsolationGroupHeld));
    h.server.close_client(A).unwrap();
    bind_in(&mut h, B, DEV2, GROUP).expect("the group of a closed client is free");
    h.assert_clean();
}
