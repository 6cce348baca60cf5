//! System call numbers and their arguments.

macro_rules! syscalls {
    ($( $(#[$doc:meta])* $name:ident = $num:expr, )*) => {
        /// System call numbers.
        #[repr(u64)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Syscall {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Syscall {
            pub const ALL: &'static [Syscall] = &[$(Syscall::$name,)*];

            pub fn from_number(n: u64) -> Option<Syscall> {
                match n {
                    $( $num => Some(Syscall::$name), )*
                    _ => None,
                }
            }
        }
    };
}

syscalls! {
    /// `debug_write(ptr, len)`: bytes to the kernel console; `len` <= MAX_DEBUG_WRITE. The
    /// bytes must be in user RAM: device memory is refused (BadAddress).
    DebugWrite = 0,
    /// `exit(code)`: ends the calling process.
    Exit = 1,
    /// `yield()`.
    Yield = 2,
    /// `cap_derive(src, dst, rights, badge) `: a copy of `src` in empty slot `dst` with
    /// `rights` ∩ src's rights; `badge` (non-zero) marks an endpoint copy so the receiver can
    /// tell senders apart; only an unbadged endpoint can be badged. Needs DERIVE on `src`.
    CapDerive = 3,
    /// `cap_delete(slot)`.
    CapDelete = 4,
    /// `cap_revoke(slot)`: deletes every capability derived from `slot` (transitively, in every
    /// process), and the mappings made through them. Needs DERIVE.
    CapRevoke = 5,
    /// `cap_info(slot) -> (type, rights, badge)`.
    CapInfo = 6,
    /// `call(ep, cap, w0, w1, w2, w3) -> (badge, w0..w3, cap_received)`: sends a message (and
    /// moves capability `cap` unless NO_CAP; needs GRANT on it) and waits for the reply.
    /// Needs WRITE on `ep`.
    Call = 7,
    /// `recv(ep, recv_slot) -> (badge, w0..w3, cap_received)`: waits for a message; a
    /// transferred capability lands in `recv_slot` (must be empty). Needs READ on `ep`.
    Recv = 8,
    /// `reply(w0, w1, w2, w3)`: answers the caller this thread last received from.
    Reply = 9,
    /// `notify_signal(ntfn, bits)`: ORs `bits` into the notification. Needs WRITE.
    NotifySignal = 10,
    /// `notify_wait(ntfn, flags, irq) -> bits`: waits until some bit is set, returns and
    /// clears them. `flags` from `WaitFlags`: with ACK_IRQ, first acknowledges `irq` as
    /// `irq_ack` does (both capabilities are checked before either takes effect).
    NotifyWait = 11,
    /// `notify_poll(ntfn, flags, irq) -> bits`: like wait but returns 0 at once if none is set.
    NotifyPoll = 12,
    /// `mem_alloc(pages, dst, flags)`: a new zeroed memory object charged to the caller's
    /// quota; `flags` from `mem_flags`.
    MemAlloc = 13,
    /// `mem_map(mem, vaddr, first_page, pages, flags)`: maps pages of a memory object.
    /// READ needed; WRITE/EXECUTE rights for those flags. The page tables it adds and its
    /// records are charged to the caller's quota (OutOfMemory when it is spent).
    MemMap = 14,
    /// `unmap(vaddr, pages)`: removes the caller's mappings (memory or MMIO) and returns their
    /// charges.
    Unmap = 15,
    /// `mem_pin(authority, mem, page) -> (pin, phys)`: keeps one page of `mem` alive until
    /// `mem_unpin` and returns its physical address, so that a device may be given it.
    /// Needs a DmaAuthority capability with CONTROL, and READ on `mem`.
    MemPin = 16,
    /// `mem_unpin(pin)`.
    MemUnpin = 17,
    /// `mmio_map(mmio, vaddr, first_page, pages)`: maps device registers uncached; charged as
    /// `mem_map` is.
    MmioMap = 18,
    /// `irq_bind(irq, ntfn, bit)`: interrupts on the line signal `1 << bit` on `ntfn`.
    /// Needs CONTROL on the IRQ and WRITE on the notification.
    IrqBind = 19,
    /// `irq_ack(irq)`: re-enables the line after the driver serviced the device.
    IrqAck = 20,
    /// `thread_create(entry, stack_top, arg, priority) -> tid`: a new thread in the caller's
    /// process, with a priority (0 lowest .. 7) no higher than the caller's. Scheduling is
    /// strict priority, round robin within a level; the kernel starts threads at priority 4.
    ThreadCreate = 21,
    /// `endpoint_create(dst)`.
    EndpointCreate = 22,
    /// `notification_create(dst)`.
    NotificationCreate = 23,
    /// `process_kill(process)`: needs CONTROL.
    ProcessKill = 24,
    /// `process_wait(process, ntfn, bit)`: signals `1 << bit` on `ntfn` when the process ends
    /// (at once if it has ended). Needs READ on the process.
    ProcessWatch = 25,
    /// `cap_grant(process, src, dst, rights)`: copies `src` (GRANT needed) into slot `dst` of
    /// another process with `rights` ∩ src's rights. Needs CONTROL on the process.
    CapGrant = 26,
    /// `mmio_info(mmio) -> (phys_base, size)`: a device region's bus address is no secret; this
    /// is the only physical address a process without DmaAuthority can learn.
    MmioInfo = 27,
    /// `null()`: returns at once; measures the system-call path.
    Null = 28,
    /// `process_create(image, arg, dst, quota_pages)`: a process from boot image number
    /// `image`, not yet running, with a memory quota taken from the caller's (it returns to the
    /// caller's once the process has ended and nothing charged to it is left). The capability
    /// in `dst` has every right.
    ProcessCreate = 29,
    /// `process_start(process)`: needs CONTROL.
    ProcessStart = 30,
    /// `reply_recv(ep, recv_slot, w0, w1, w2, w3) -> (badge, w0..w3, cap_received)`: replies
    /// to the pending caller, if any, then waits for the next message: a server's loop in one
    /// system call.
    ReplyRecv = 31,
    /// `mem_pin_range(authority, mem, first_page, pages, out) -> pin`: pins `pages` pages
    /// (at most MAX_PIN_RANGE) under one pin and writes their physical addresses, one u64 each,
    /// to the caller's writable, 8-byte aligned buffer at `out`. Same rights as `mem_pin`.
    MemPinRange = 32,
    /// `mem_info(mem) -> (serial, pages, rights)`: a memory object's kernel-wide serial number
    /// (stable for its lifetime, never reused; tells whether two capabilities name one object),
    /// its size, and the rights of this capability to it (so one call tells a server whether a
    /// client may let devices write the memory). Needs READ.
    MemInfo = 33,
    /// `irq_info(irq) -> line`: the interrupt line an IRQ capability serves. Needs CONTROL.
    IrqInfo = 34,
    /// `ioport_read(ports, port, width) -> value`: x86 `in` of 1, 2 or 4 bytes from a port the
    /// capability covers. Needs READ.
    IoPortRead = 35,
    /// `ioport_write(ports, port, width, value)`: x86 `out`. Needs WRITE.
    IoPortWrite = 36,
    /// `mmio_carve(mmio, first_page, pages, dst, rights)`: a capability to a page range of an
    /// MMIO region (e.g. one device's BAR out of the PCI window), derived from `mmio` (so
    /// revoking `mmio` revokes it) with `rights` ∩ its rights. Needs DERIVE.
    MmioCarve = 37,
    /// `reply_lend(src, dst, rights, w0, w1, w2) -> ()`: answers the caller this thread last
    /// received from with `(w0, w1, w2, 0)` and `cap_received` set, after putting a copy of
    /// `src` with `rights` ∩ src's rights into the caller's empty slot `dst` (which the caller
    /// names in its message). The copy is derived from `src`: a revoke of `src` takes it back,
    /// and nothing the caller does with it (delete, revoke) reaches `src` or the mappings made
    /// through it. Needs GRANT on `src`. A failure answers nobody: the caller still awaits a
    /// reply.
    ReplyLend = 38,
    /// `irq_unbind(irq)`: the line signals no notification until bound again (by any holder
    /// of a capability to it). Needs CONTROL. An IOMMU server takes a line back this way
    /// before handing it to the next driver.
    IrqUnbind = 39,
    /// `revocation_watch(authority, ntfn, bit)`: the kernel signals `1 << bit` on `ntfn`
    /// whenever one of the caller's pins is revoked (see `revocation_read`); replaces an
    /// earlier watch. Needs a DmaAuthority capability with CONTROL and WRITE on `ntfn`.
    ///
    /// A pin (and a `cap_watch`) is *lent through* the capability nearest above the one it was
    /// taken through, in the derivation tree, that another process held at that moment (the
    /// client's capability from which the copy it sent was derived). The pin is revoked when
    /// that lender is deleted (`cap_delete`, an ancestor's `cap_revoke`, its holder's end, an
    /// in-flight copy dropped) or revoked itself (`cap_revoke` on it). A pin with no such
    /// lender (the sender moved its last capability) is never revoked. A revoked pin keeps its
    /// frames held, and yields one record, until the pinner calls `mem_unpin`.
    RevocationWatch = 40,
    /// `revocation_read(authority, out, max) -> count`: moves up to `max` (at most
    /// `MAX_REVOCATION_RECORDS`) pending records of
    /// revoked pins, `REVOCATION_RECORD_WORDS` u64 each, to the caller's writable, 8-byte
    /// aligned buffer at `out`: (pin, memory-object serial or 0 for a `cap_watch`, first page,
    /// pages). A pin yields at most one record whatever happens to it, so the pending records
    /// never outnumber the caller's pins and none is lost. Needs DmaAuthority with CONTROL.
    RevocationRead = 41,
    /// `cap_watch(authority, cap) -> pin`: a pin of no memory that is revoked as a memory pin
    /// is, when the lender of `cap` goes (an IOMMU server watches device capabilities so).
    /// Released with `mem_unpin`. Needs DmaAuthority with CONTROL.
    CapWatch = 42,
    /// `quarantine_release(authority) -> (pages, objects)`: returns to the free pool the memory
    /// objects the kernel quarantined when processes holding pins ended (an IOMMU server's
    /// tables, queues and pinned client pages, which a unit may still walk or write) and the
    /// address-space watches of such a server, which end (what they held for bound processes
    /// is freed), and says how many pages and objects (a watch counts as one) that was. Only
    /// an IOMMU server that has put every unit into a blocking state over new tables may call
    /// it: that is the claim the call makes (see the threat model in docs/architecture.md).
    /// Needs DmaAuthority with CONTROL.
    QuarantineRelease = 43,
    /// `msi_route(authority, device_id, count, first_slot) -> first_intid` (arm, GICv3 ITS):
    /// maps EventIDs `0..count` (a power of two, at most `MAX_MSI_EVENTS`) of the device the
    /// ITS knows as `device_id` to fresh LPIs and puts one edge-triggered IRQ capability per
    /// event, with every right, in the caller's empty slots `first_slot..first_slot + count`
    /// (event i in `first_slot + i`); returns the INTID of event 0. Any other EventID the
    /// device writes to GITS_TRANSLATER is dropped by the ITS. InvalidState without an ITS
    /// (GICv2, x86) or if the device has events already; OutOfMemory when LPIs run out.
    /// Needs DmaAuthority with CONTROL.
    MsiRoute = 47,
    /// `msi_unroute(authority, device_id)`: the ITS forgets every event of the device (DISCARD
    /// of each, then MAPD with V clear, then SYNC) before this returns, and the IRQ objects
    /// `msi_route` made are retired: unbound, and never delivering again whoever holds them.
    /// InvalidState if the device has no events. Needs DmaAuthority with CONTROL.
    MsiUnroute = 48,
    /// `address_space_cap(process, dst)`: a capability in `dst` to the address space of the
    /// process in slot `process` (CONTROL needed; the capability is derived from it, so
    /// revoking the process capability revokes it), or of the caller with `process` = NO_CAP.
    /// Rights: CONTROL (bind the address space for DMA: `address_space_watch`), GRANT, DERIVE.
    AddressSpaceCap = 51,
    /// `address_space_watch(authority, cap) -> (pin, root, attributes)`: shares the address
    /// space named by `cap` (CONTROL needed) with the IOMMU: returns its top-level table (x86:
    /// the CR3 frame; aarch64: the TTBR0_EL1 table, T0SZ 16, 4 KiB granule) and the memory
    /// attributes it is walked with (aarch64: MAIR_EL1; x86: 0), and a pin that watches it.
    /// From then on every change that shrinks what the tables reach (an unmap, and the table
    /// pages it frees) yields a record to the caller, (pin, ADDRESS_SPACE_CHANGE, first page,
    /// pages) with virtual page numbers, coalesced per pin (a permission downgrade too:
    /// `mem_protect`), and the frames concerned (data pages
    /// and table pages) stay out of reuse until the caller acknowledges the records it read
    /// (`address_space_ack`). The pin is revoked as a `cap_watch` is (its record has serial 0),
    /// and also when the process ends; the process's tables and frames are then held until
    /// `mem_unpin`. At most `MAX_ADDRESS_SPACE_WATCHES` watches per address space at a time
    /// (each with its own records and acknowledgements; a frame is reused once every watch
    /// acknowledged it), and only of tables an IOMMU walks as the CPU does (x86: U/S on every
    /// user level; aarch64: AF and EL0 on every page), else InvalidState. Needs DmaAuthority
    /// with CONTROL.
    AddressSpaceWatch = 52,
    /// `address_space_ack(authority, pin)`: the caller invalidated what the records it read of
    /// watch `pin` named: their frames may be reused. Needs DmaAuthority with CONTROL.
    AddressSpaceAck = 53,
    /// `mem_protect(vaddr, pages, flags)`: takes rights away from the caller's mappings of
    /// `pages` pages at `vaddr`: each keeps only the `map_flags` in `flags` (WRITE, EXECUTE;
    /// reading stays). Every page must be mapped (NotMapped) and already have every right
    /// `flags` names (MissingRights): the call never adds one. A watched address space (see
    /// `address_space_watch`) yields a change record per watch for the pages whose rights
    /// shrank, and the caller waits until every watch acknowledged it (so a device sharing the
    /// tables no longer holds the old rights when this returns). If a watch ends before its
    /// acknowledgement because its watcher ended, the call returns PeerGone: the change is in
    /// force for the CPU, but no IOMMU invalidation was confirmed for it. A watch released
    /// by its living watcher (`mem_unpin`, after unbinding) counts as acknowledged.
    MemProtect = 58,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers are handed out in blocks to work done side by side, so a block may be missing
    /// until its work lands: the numbers rise, and every number between them is refused.
    #[test]
    fn syscall_numbers_round_trip_and_rise() {
        for (i, s) in Syscall::ALL.iter().enumerate() {
            assert_eq!(Syscall::from_number(*s as u64), Some(*s));
            if i > 0 {
                assert!(*s as u64 > Syscall::ALL[i - 1] as u64, "{s:?} out of order");
            }
        }
        let last = *Syscall::ALL.last().expect("system calls") as u64;
        for number in 0..=last + 1 {
            assert_eq!(Syscall::from_number(number).is_some(), Syscall::ALL.iter().any(|s| *s as u64 == number), "{number}");
        }
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }
}
