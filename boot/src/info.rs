//! The one value both boot paths hand to the kernel.

/// Where the kernel's direct map of physical memory starts: physical address `p` is readable at
/// `DIRECT_MAP_BASE + p` once `kernel_main` runs, on both architectures.
pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// The kernel image is linked at `KERNEL_VIRT_BASE + its physical load address`.
pub const KERNEL_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// The early page tables map this much physical memory in the direct map (every RAM region
/// QEMU gives the guest in our configurations lies below it, as do all device MMIO windows
/// except aarch64's high PCIe ECAM/MMIO, which the kernel maps on demand).
pub const EARLY_DIRECT_MAP_SIZE: u64 = 4 << 30;

pub const MAX_MEMORY_REGIONS: usize = 32;
pub const MAX_CMDLINE: usize = 256;

/// A half-open physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// How the platform describes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// x86: ACPI, starting at the RSDP's physical address.
    Acpi { rsdp: u64 },
    /// aarch64 `virt`: a flattened device tree at this physical address, `size` bytes.
    /// (QEMU's ACPI tables are reachable through fw_cfg; the IOMMU server reads them there.)
    DeviceTree { dtb: u64, size: u64 },
}

/// Everything the kernel learns from the boot path.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// Free RAM: firmware-reported usable memory minus the kernel image, the DTB, the boot
    /// page tables and the boot stack. Sorted, non-overlapping, page-aligned.
    pub usable: [PhysRange; MAX_MEMORY_REGIONS],
    pub usable_count: usize,
    /// Total RAM the firmware reported as usable before the subtractions above.
    pub ram_bytes: u64,
    /// Physical extent of the loaded kernel image.
    pub kernel_image: PhysRange,
    pub firmware: Firmware,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Exception level the CPU was entered at (aarch64: 1 or 2; x86: 0).
    pub entry_el: u8,
    /// Firmware-reserved memory (ACPI tables, BIOS data) the IOMMU server may read.
    pub firmware_regions: [PhysRange; MAX_MEMORY_REGIONS],
    pub firmware_region_count: usize,
    /// Guest instruction count (TSC / CNTVCT under icount) read at the first boot instruction
    /// that could read it, for the boot-cost benchmark.
    pub boot_start_count: u64,
}

impl BootInfo {
    pub const fn empty(firmware: Firmware) -> Self {
        BootInfo {
            usable: [PhysRange { start: 0, end: 0 }; MAX_MEMORY_REGIONS],
            usable_count: 0,
            ram_bytes: 0,
            kernel_image: PhysRange { start: 0, end: 0 },
            firmware,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            entry_el: 0,
            firmware_regions: [PhysRange { start: 0, end: 0 }; MAX_MEMORY_REGIONS],
            firmware_region_count: 0,
            boot_start_count: 0,
        }
    }

    pub fn usable_regions(&self) -> &[PhysRange] {
        &self.usable[..self.usable_count]
    }

    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    pub fn firmware_regions(&self) -> &[PhysRange] {
        &self.firmware_regions[..self.firmware_region_count]
    }

    /// Records firmware-reserved memory (dropped beyond `MAX_MEMORY_REGIONS`).
    pub fn add_firmware_region(&mut self, range: PhysRange) {
        if self.firmware_region_count < MAX_MEMORY_REGIONS {
            self.firmware_regions[self.firmware_region_count] = range;
            self.firmware_region_count += 1;
        }
    }

    /// Copies the command line, cut at `MAX_CMDLINE` bytes and at the first NUL.
    pub fn set_cmdline(&mut self, bytes: &[u8]) {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()).min(MAX_CMDLINE);
        self.cmdline[..len].copy_from_slice(&bytes[..len]);
        self.cmdline_len = len;
    }

    /// Adds firmware-reported RAM, then carves out every `reserved` range. Regions are
    /// page-aligned inwards; regions beyond `MAX_MEMORY_REGIONS` are dropped (and so never used).
    pub fn add_ram(&mut self, ram: PhysRange, reserved: &[PhysRange]) {
        const PAGE: u64 = 4096;
        self.ram_bytes += ram.size();
        let mut pieces = [ram; 8];
        let mut count = 1;
        for r in reserved {
            let mut next = [PhysRange::default(); 8];
            let mut n = 0;
            for p in &pieces[..count] {
                if r.end <= p.start || r.start >= p.end {
                    if n < next.len() { next[n] = *p; n += 1; }
                    continue;
                }
                if r.start > p.start && n < next.len() {
                    next[n] = PhysRange { start: p.start, end: r.start };
                    n += 1;
                }
                if r.end < p.end && n < next.len() {
                    next[n] = PhysRange { start: r.end, end: p.end };
                    n += 1;
                }
            }
            pieces = next;
            count = n;
        }
        for p in &pieces[..count] {
            let start = (p.start + PAGE - 1) & !(PAGE - 1);
            let end = p.end & !(PAGE - 1);
            if start < end && self.usable_count < MAX_MEMORY_REGIONS {
                self.usable[self.usable_count] = PhysRange { start, end };
                self.usable_count += 1;
            }
        }
        self.usable[..self.usable_count].sort_unstable_by_key(|r| r.start);
    }
}
