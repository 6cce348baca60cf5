//! A host model of DMA memory for the tests: `Vec`-backed pages at made-up physical addresses,
//! with a separate *device view* that only `flush_for_device` updates.
//!
//! The device view models an IOMMU whose walks do not snoop CPU caches (VT-d ECAP.C = 0): a
//! test that walks tables through [`FakeDma::device_read`] sees exactly what the engine
//! flushed, so a missing flush shows up as a wrong translation. The model also counts live
//! allocations so tests can assert that no table page leaks, and can be told to fail.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hwio::{DmaAllocator, DmaBuffer};

struct Allocation {
    /// What the CPU reads and writes through `virt`: page-aligned heap memory (as a real DMA
    /// allocator hands out), accessed only through raw pointers because the engine holds
    /// pointers into it as well.
    cpu: *mut u64,
    /// What a non-snooping walker reads at `phys`.
    device: Vec<u64>,
}

impl Allocation {
    fn words(&self) -> usize {
        self.device.len()
    }

    fn cpu_range(&self) -> std::ops::Range<usize> {
        self.cpu as usize..self.cpu as usize + self.words() * 8
    }

    fn read_cpu(&self, word: usize) -> u64 {
        assert!(word < self.words());
        // SAFETY: `cpu` points at `words()` live u64s (allocated in `alloc_zeroed`, released only
        // in `free`), `word` is in bounds, and the tests are single-threaded.
        unsafe { self.cpu.add(word).read() }
    }

    fn write_cpu(&self, word: usize, value: u64) {
        assert!(word < self.words());
        // SAFETY: as in `read_cpu`.
        unsafe { self.cpu.add(word).write(value) }
    }
}

pub struct FakeDma {
    next_phys: u64,
    /// Keyed by physical address. `RefCell` because `flush_for_device` takes `&self`.
    live: RefCell<BTreeMap<u64, Allocation>>,
    /// Allocations that may still succeed; `None` for unlimited.
    allocations_left: Option<usize>,
    flushes: RefCell<usize>,
}

impl FakeDma {
    pub fn new() -> Self {
        // Physical addresses far from anything the tests map, so a mix-up shows.
        Self { next_phys: 0x40_0000_0000, live: RefCell::new(BTreeMap::new()), allocations_left: None, flushes: RefCell::new(0) }
    }

    /// Number of buffers allocated and not freed.
    pub fn live_count(&self) -> usize {
        self.live.borrow().len()
    }

    /// Lets only `count` more allocations succeed.
    pub fn fail_after(&mut self, count: usize) {
        self.allocations_left = Some(count);
    }

    pub fn flush_count(&self) -> usize {
        *self.flushes.borrow()
    }

    /// The (8-byte) word a walker reads at `phys`.
    pub fn device_read(&self, phys: u64) -> u64 {
        let live = self.live.borrow();
        let (&base, allocation) = live.range(..=phys).next_back().expect("read outside any allocation");
        let word = ((phys - base) / 8) as usize;
        assert!(word < allocation.device.len(), "read of {phys:#x} past its allocation");
        allocation.device[word]
    }

    /// A walker updating an entry (A/D or AP[2] under HTTU): it writes memory, which the CPU and
    /// later walks both see.
    pub fn device_update(&self, phys: u64, update: impl Fn(u64) -> u64) {
        let mut live = self.live.borrow_mut();
        let (&base, allocation) = live.range_mut(..=phys).next_back().expect("write outside any allocation");
        let word = ((phys - base) / 8) as usize;
        let value = update(allocation.read_cpu(word));
        allocation.write_cpu(word, value);
        allocation.device[word] = value;
    }
}

impl FakeDma {
    /// Host memory behind a buffer of `size` bytes: page aligned, like the server's DMA pool.
    fn layout(size: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(size, 4096).expect("buffer layout")
    }
}

impl DmaAllocator for FakeDma {
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Option<DmaBuffer> {
        assert!(align.is_power_of_two() && align >= 4096, "alignment {align}");
        assert!(size.is_multiple_of(8) && size > 0, "size {size}");
        if let Some(left) = self.allocations_left.as_mut() {
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        let phys = self.next_phys.next_multiple_of(align as u64);
        // A gap after each buffer, so an overrun does not land in a neighbour.
        self.next_phys = phys + size as u64 + 4096;
        // SAFETY: the layout has a non-zero size (asserted above).
        let cpu = unsafe { std::alloc::alloc_zeroed(Self::layout(size)) }.cast::<u64>();
        assert!(!cpu.is_null(), "host out of memory");
        self.live.borrow_mut().insert(phys, Allocation { cpu, device: vec![0u64; size / 8] });
        Some(DmaBuffer { phys, virt: cpu.cast::<u8>(), size })
    }

    fn free(&mut self, buffer: DmaBuffer) {
        let allocation = self.live.borrow_mut().remove(&buffer.phys).expect("free of a buffer not allocated");
        assert_eq!(allocation.words() * 8, buffer.size, "free with a different size");
        assert_eq!(allocation.cpu.cast::<u8>(), buffer.virt, "free with a different virt");
        // SAFETY: `cpu` came from `std::alloc::alloc_zeroed` with this same layout in
        // `alloc_zeroed` and is released exactly once, here, after its entry left `live`.
        unsafe { std::alloc::dealloc(allocation.cpu.cast::<u8>(), Self::layout(buffer.size)) };
    }

    fn flush_for_device(&self, virt: *const u8, len: usize) {
        *self.flushes.borrow_mut() += 1;
        let mut live = self.live.borrow_mut();
        let allocation = live
            .values_mut()
            .find(|allocation| allocation.cpu_range().contains(&(virt as usize)))
            .expect("flush outside any live allocation");
        let first = (virt as usize - allocation.cpu as usize) / 8;
        let words = len.div_ceil(8);
        assert!(first + words <= allocation.words(), "flush past the allocation");
        for word in first..first + words {
            allocation.device[word] = allocation.read_cpu(word);
        }
    }
}
