//! Starting the root task: the one process the kernel creates by itself. It receives every
//! boot capability and a directory page naming them (`kernel_abi::boot_directory`), and
//! starts the rest of the system from its static description (user/root).

use alloc::string::String;
use kernel_abi::boot_directory::{DIRECTORY_SLOT, ENTRY_WORDS, FIRST_CAP_SLOT, MAX_ENTRIES, NAME_BYTES};
use kernel_abi::Rights;

use crate::object::{MemoryObject, Object, QuotaAccount};
use crate::platform::{boot_caps, BootCap};
use crate::process::{Kernel, Pid};
use crate::user_images::ROOT;

/// Memory the root task may use and hand on (4 KiB pages): the IOMMU server's, two drivers'
/// and its own, and a second server's: a child's quota leaves its creator's limit for good, so
/// a server the root task restarts needs its pages anew.
pub const ROOT_QUOTA: u64 = 12288;

/// What the directory says about a capability besides its name: object type, value, size.
fn describe(cap: &BootCap) -> (u64, u64, u64) {
    use kernel_abi::ObjectType;
    match &cap.object {
        Object::Mmio(region) => (ObjectType::Mmio as u64, region.base, region.size),
        Object::Irq(irq) => (ObjectType::Irq as u64, u64::from(irq.borrow().line), 0),
        #[cfg(target_arch = "x86_64")]
        Object::IoPorts { base, count } => (ObjectType::IoPorts as u64, u64::from(*base), u64::from(*count)),
        Object::DmaAuthority => (ObjectType::DmaAuthority as u64, 0, 0),
        _ => (0, 0, 0),
    }
}

/// Creates the root task with every boot capability and the directory; does not start it.
pub fn create(kernel: &mut Kernel) -> Result<Pid, String> {
    create_with_description(kernel, kernel_abi::boot_directory::description::FLAT)
}

/// As `create`, with the root task to carry out its system description number `description`
/// (`kernel_abi::boot_directory::description`).
pub fn create_with_description(kernel: &mut Kernel, description: u64) -> Result<Pid, String> {
    let pid = kernel.create_process("root", ROOT, description, ROOT_QUOTA).map_err(|e| alloc::format!("root task image: {e:?}"))?;
    let caps = boot_caps(crate::boot_info());
    if caps.len() > MAX_ENTRIES {
        return Err(alloc::format!("{} boot capabilities, the directory holds {MAX_ENTRIES}", caps.len()));
    }
    let directory = MemoryObject::allocate(1, &QuotaAccount::new(1)).ok_or("no page for the boot directory")?;
    // SAFETY: frame 0 of a memory object just allocated (zeroed) for the directory, which no
    // one else references yet; the direct map covers it.
    let words = unsafe { core::slice::from_raw_parts_mut(crate::mm::phys_to_virt(directory.frames[0]).cast::<u64>(), 512) };
    words[0] = caps.len() as u64;
    for (index, cap) in caps.into_iter().enumerate() {
        let slot = FIRST_CAP_SLOT + index as u64;
        let (kind, value, size) = describe(&cap);
        let entry = &mut words[ENTRY_WORDS * (index + 1)..ENTRY_WORDS * (index + 2)];
        entry[..4].copy_from_slice(&[slot, kind, value, size]);
        let mut name = [0u8; NAME_BYTES];
        let bytes = cap.name.as_bytes();
        name[..bytes.len().min(NAME_BYTES)].copy_from_slice(&bytes[..bytes.len().min(NAME_BYTES)]);
        entry[4] = u64::from_le_bytes(name[..8].try_into().expect("8 bytes"));
        entry[5] = u64::from_le_bytes(name[8..].try_into().expect("8 bytes"));
        kernel.install(pid, slot, cap.object, cap.rights, 0).map_err(|e| alloc::format!("boot capability {}: {e:?}", cap.name))?;
    }
    kernel.install(pid, DIRECTORY_SLOT, Object::Memory(directory), Rights::READ, 0).map_err(|e| alloc::format!("directory: {e:?}"))?;
    Ok(pid)
}
