//! Circular queue pointers (IHI 0070, section 3.5.1 "SMMU circular queues").
//!
//! A queue of 2^n entries is indexed by an (n+1)-bit value: bits [n-1:0] are the slot, bit n the
//! wrap flag, which toggles each time the pointer passes the end. PROD == CONS (including the wrap
//! bit) means empty; equal slots with different wrap bits mean full. Every queue register keeps
//! the pointer in its low 20 bits (the largest queue has 2^19 entries); higher bits carry flags
//! (CMDQ_CONS.ERR, EVENTQ_PROD.OVFLG, EVENTQ_CONS.OVACKFLG) that this type leaves alone.

/// A producer or consumer pointer of a queue with 2^`log2_entries` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePointer {
    log2_entries: u32,
    /// Slot and wrap bit, nothing else.
    value: u32,
}

impl QueuePointer {
    pub const fn new(log2_entries: u32) -> QueuePointer {
        QueuePointer { log2_entries, value: 0 }
    }

    /// The pointer held in a register value (flags above the wrap bit are dropped).
    pub const fn from_register(log2_entries: u32, register: u32) -> QueuePointer {
        QueuePointer { log2_entries, value: register & ((2 << log2_entries) - 1) }
    }

    /// Slot and wrap bit, ready to be merged with flags and written to a register.
    pub const fn register_value(self) -> u32 {
        self.value
    }

    pub const fn index(self) -> u32 {
        self.value & ((1 << self.log2_entries) - 1)
    }

    pub const fn wrap(self) -> bool {
        self.value >> self.log2_entries & 1 == 1
    }

    pub const fn entries(self) -> u32 {
        1 << self.log2_entries
    }

    /// The pointer after one more entry, toggling the wrap bit at the end of the queue.
    pub const fn next(self) -> QueuePointer {
        QueuePointer { log2_entries: self.log2_entries, value: (self.value + 1) & ((2 << self.log2_entries) - 1) }
    }

    /// Whether a queue with this producer and `cons` consumer is empty.
    pub const fn is_empty_with(self, cons: QueuePointer) -> bool {
        self.value == cons.value
    }

    /// Whether a queue with this producer and `cons` consumer is full.
    pub const fn is_full_with(self, cons: QueuePointer) -> bool {
        self.index() == cons.index() && self.wrap() != cons.wrap()
    }

    /// Number of entries between `cons` and this producer.
    pub const fn used_with(self, cons: QueuePointer) -> u32 {
        (self.value.wrapping_sub(cons.value)) & ((2 << self.log2_entries) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_bit_distinguishes_full_from_empty() {
        let cons = QueuePointer::new(2);
        let mut prod = cons;
        for _ in 0..4 {
            assert!(!prod.is_full_with(cons));
            prod = prod.next();
        }
        assert_eq!(prod.index(), 0);
        assert!(prod.wrap());
        assert!(prod.is_full_with(cons));
        assert!(!prod.is_empty_with(cons));
        assert_eq!(prod.used_with(cons), 4);
        // Four more entries wrap the wrap bit back.
        for _ in 0..4 {
            prod = prod.next();
        }
        assert_eq!(prod.register_value(), 0);
        assert!(prod.is_empty_with(cons));
    }

    #[test]
    fn register_flags_are_ignored() {
        let p = QueuePointer::from_register(3, 0x8000_000D);
        assert_eq!((p.index(), p.wrap(), p.register_value()), (5, true, 0xD));
    }
}
