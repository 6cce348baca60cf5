//! HOSTILE_STREAM and DMA_ROUNDS: run side by side by two driver processes of one test. The
//! hostile one throws a bounded, seeded stream of random requests at the server (valid ones
//! that build real objects, and random words: unknown opcodes, reserved bits, stale and
//! foreign handles, overflowing ranges, capabilities where none belong) while its own device
//! DMAs at random IOVAs. The good one keeps mapping, copying through its device and checking
//! every byte. The server must answer every request with success or a defined error, and the
//! good driver must never see a wrong byte or a fault.

use crate::{buffer, check, connect_first, copy_page, expect_no_fault, fill_pattern, open_device, same_bytes, slot, Outcome, MSI_WINDOW_IOVA};
use iommu_abi::wire::{Message, MESSAGE_WORDS};
use kernel_abi::MemFlags;
use iommu_abi::{Error, Handle, IoasId, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::{HwptOptions, Transport};
use userlib::{println, syscall};

/// Requests the hostile driver sends.
const STREAM_REQUESTS: u32 = 3000;
/// Copy rounds of the good driver, each with its own map and unmap.
const DMA_ROUNDS: u8 = 24;
/// The good driver's source and destination IOVAs.
const SOURCE_IOVA: u64 = 0x3000_0000;
const DESTINATION_IOVA: u64 = 0x3010_0000;
/// Highest opcode the stream sends: a few above the last one the protocol defines.
const HIGHEST_OPCODE: u64 = 40;

/// A small deterministic generator (xorshift64*): the stream is the same for the same seed.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// An argument word as a hostile driver would pick it: mostly small numbers (which name
    /// live handles of any client), page-aligned addresses and lengths, the extremes that
    /// overflow arithmetic, and now and then pure noise.
    fn argument(&mut self) -> u64 {
        match self.below(8) {
            0 | 1 => self.below(16),
            2 => self.below(1 << 20) * PAGE_SIZE,
            3 => u64::MAX - self.below(3 * PAGE_SIZE),
            4 => 1 << self.below(64),
            5 => self.below(64) * PAGE_SIZE,
            6 => 0,
            _ => self.next(),
        }
    }
}

/// Whether the reply's status word is success or an error the protocol defines.
fn defined_status(reply: &Message) -> bool {
    reply[0] == 0 || (reply[0] >> 32 == 0 && Error::from_code(reply[0] as u32).is_some())
}

/// The hostile driver: seed in the start argument's upper bits.
pub fn hostile_stream(seed: u64) -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let memory = buffer(slot::BUFFER, 4, MemFlags::empty())?;
    memory.fill(0x77);
    let mut random = Random::new(seed);
    // Real objects for the random words to hit: the device bound, an IOAS with an HWPT the
    // device is attached to, a fault queue, a mapping.
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (10, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (11, "ioas_alloc"))?;
    let faults = iommu.fault_alloc().map_err(|_| (12, "fault_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (13, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (14, "device_attach"))?;
    let (mut successes, mut refusals) = (0u32, 0u32);
    for request in 0..STREAM_REQUESTS {
        let reply = match random.below(4) {
            // A well-formed operation on objects that may or may not exist.
            0 => well_formed(&mut iommu, &mut random, ioas),
            // Random words, with or without the buffer's capability attached.
            _ => {
                let mut message: Message = [0; MESSAGE_WORDS];
                let flags = if random.below(4) == 0 { random.below(1 << 16) } else { 0 };
                message[0] = random.below(HIGHEST_OPCODE + 1) | flags << 16;
                for word in message.iter_mut().skip(1).take(1 + random.below(MESSAGE_WORDS as u64 - 1) as usize) {
                    *word = random.argument();
                }
                let cap = (random.below(5) == 0).then_some(slot::BUFFER);
                iommu.transport_mut().call(&message, cap).0
            }
        };
        if !defined_status(&reply) {
            println!("edu-driver: stream request {request}: reply status {:#x} is no defined outcome", reply[0]);
            return Err((20, "server answered with an undefined status"));
        }
        if reply[0] == 0 {
            successes += 1;
        } else {
            refusals += 1;
        }
        // The device DMAs at a random IOVA now and then: faults land in its own queue.
        // (Never into the interrupt window: a DMA write there is an MSI, and forged interrupts
        // are the interrupt-isolation tests' subject.)
        if request % 64 == 0 {
            let iova = random.below(1 << 20) * PAGE_SIZE;
            if (MSI_WINDOW_IOVA..MSI_WINDOW_IOVA + 0x10_0000).contains(&iova) {
                continue;
            }
            // The device's own end stays inside its buffer: QEMU's edu copies out of range
            // of it anyway and can crash (docs/qemu-hardware facts); only the IOVA is hostile.
            let copied = if random.below(2) == 0 {
                edu.dma(crate::edu::BUFFER, iova, PAGE_SIZE, true)
            } else {
                edu.dma(iova, crate::edu::BUFFER, PAGE_SIZE, false)
            };
            copied.map_err(|why| (21, why))?;
        }
    }
    // The server still serves this client correctly after all of it.
    let probe = iommu.ioas_alloc().map_err(|_| (22, "ioas_alloc after the stream"))?;
    iommu.destroy(probe.handle()).map_err(|_| (23, "destroy after the stream"))?;
    println!("edu-driver: hostile stream: {STREAM_REQUESTS} requests, {successes} succeeded, {refusals} refused with defined errors");
    Ok(())
}

/// One well-formed request with random arguments; returns the reply message's status word.
fn well_formed(iommu: &mut crate::Client, random: &mut Random, ioas: IoasId) -> Message {
    let status = |result: Result<(), Error>| -> Message {
        let mut reply = [0; MESSAGE_WORDS];
        reply[0] = result.map_or_else(|error| u64::from(error.code()), |()| 0);
        reply
    };
    let some_ioas = if random.below(2) == 0 { ioas } else { IoasId(Handle(random.below(16) as u32)) };
    let offset = random.below(5) * PAGE_SIZE;
    let length = random.below(5) * PAGE_SIZE;
    let iova = random.argument() & !(PAGE_SIZE - 1);
    match random.below(5) {
        0 => status(iommu.ioas_map(some_ioas, slot::BUFFER, offset, length, IovaChoice::Fixed(iova), Perm::READ_WRITE).map(|_| ())),
        1 => status(iommu.ioas_map(some_ioas, slot::BUFFER, offset, length, IovaChoice::Auto, Perm::READ).map(|_| ())),
        2 => status(iommu.ioas_unmap(some_ioas, iova, random.argument()).map(|_| ())),
        3 => status(iommu.ioas_alloc().map(|_| ())),
        _ => status(iommu.destroy(Handle(random.below(16) as u32))),
    }
}

/// The good driver: maps, copies a page through its device, checks every byte, unmaps, for
/// `DMA_ROUNDS` rounds, each with another pattern; no fault may reach its queue.
pub fn dma_rounds() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (10, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (11, "ioas_alloc"))?;
    let faults = iommu.fault_alloc().map_err(|_| (12, "fault_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (13, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (14, "device_attach"))?;
    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    for round in 0..DMA_ROUNDS {
        fill_pattern(source, round);
        destination.fill(!round);
        let from = iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(SOURCE_IOVA), Perm::READ).map_err(|_| (15, "map the source"))?;
        let to = iommu
            .ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ_WRITE)
            .map_err(|_| (16, "map the destination"))?;
        copy_page(&edu, from, to, 17)?;
        check(same_bytes("copy beside the hostile stream", source, destination), 18, "a copy beside the hostile stream differs")?;
        check(iommu.ioas_unmap(ioas, SOURCE_IOVA, PAGE_SIZE) == Ok(PAGE_SIZE), 19, "unmap the source")?;
        check(iommu.ioas_unmap(ioas, DESTINATION_IOVA, PAGE_SIZE) == Ok(PAGE_SIZE), 20, "unmap the destination")?;
        syscall::yield_now();
    }
    expect_no_fault(&mut iommu, faults, 21)?;
    println!("edu-driver: {DMA_ROUNDS} copies beside the hostile stream: every byte right, no fault");
    Ok(())
}
