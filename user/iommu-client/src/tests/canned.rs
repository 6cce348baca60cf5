//! The typed client against a transport that answers with canned replies.

use iommu_abi::wire::{IovaChoice, Message, Reply, Request};
use iommu_abi::{Error, Handle, IoasId, IovaRange, Perm};

use crate::{Iommu, Transport};

fn h(value: u32) -> Handle {
    Handle(value)
}

/// A transport that answers with a canned reply and records what it was sent.
struct Canned {
    reply: Message,
    reply_cap: Option<u64>,
    sent: Vec<(Message, Option<u64>)>,
}

impl Transport for Canned {
    fn call(&mut self, msg: &Message, cap: Option<u64>) -> (Message, Option<u64>) {
        self.sent.push((*msg, cap));
        (self.reply, self.reply_cap)
    }
}

#[test]
fn client_stubs_send_capabilities_and_check_replies() {
    let mut iommu = Iommu::new(Canned { reply: Reply::Iova(0x8000).encode(), reply_cap: None, sent: Vec::new() });
    let iova = iommu.ioas_map(IoasId(h(2)), 0xcafe, 0x1000, 0x2000, IovaChoice::Auto, Perm::READ);
    assert_eq!(iova, Ok(0x8000));
    let (msg, cap) = iommu.transport_mut().sent[0];
    assert_eq!(cap, Some(0xcafe));
    assert_eq!(
        Request::decode(&msg, true),
        Ok(Request::IoasMap { ioas: h(2), iova: IovaChoice::Auto, perm: Perm::READ, offset: 0x1000, length: 0x2000 })
    );

    iommu.transport_mut().reply = Reply::encode_error(Error::Overlap);
    assert_eq!(iommu.ioas_unmap(IoasId(h(2)), 0, 0x1000), Err(Error::Overlap));

    iommu.transport_mut().reply = Reply::Empty.encode();
    iommu.transport_mut().reply_cap = Some(5);
    assert_eq!(iommu.destroy(h(2)), Err(Error::MalformedReply), "a reply must not carry a capability");

    iommu.transport_mut().reply_cap = None;
    assert_eq!(iommu.ioas_allow_iovas(IoasId(h(2)), &[IovaRange::ALL; 4]), Err(Error::TooManyRanges));
    assert_eq!(iommu.transport_mut().sent.len(), 3, "a request the client can refuse is not sent");
}
