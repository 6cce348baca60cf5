//! Loads a static ELF64 executable into a fresh address space.

use crate::arch::{paging::AddressSpace, Frames, MapFlags, PAGE_SIZE, USER_TOP};
use crate::mm::phys_to_virt;
use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    NotElf64,
    WrongMachine,
    Truncated,
    BadSegment,
    OutOfMemory,
}

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
#[cfg(target_arch = "x86_64")]
const EM_EXPECTED: u16 = 62;
#[cfg(target_arch = "aarch64")]
const EM_EXPECTED: u16 = 183;

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    Ok(u16::from_le_bytes(b.get(at..at + 2).ok_or(ElfError::Truncated)?.try_into().unwrap()))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    Ok(u32::from_le_bytes(b.get(at..at + 4).ok_or(ElfError::Truncated)?.try_into().unwrap()))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    Ok(u64::from_le_bytes(b.get(at..at + 8).ok_or(ElfError::Truncated)?.try_into().unwrap()))
}

/// Maps every PT_LOAD segment of `image` into `space` with frames from `frames`, recording each
/// frame in `owned`. Returns the entry point. On error, frames already recorded in `owned` are
/// the caller's to free.
pub fn load(image: &[u8], space: &mut AddressSpace, frames: &mut Frames, owned: &mut Vec<u64>) -> Result<u64, ElfError> {
    // ELF header: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if image.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(ElfError::NotElf64);
    }
    if u16_at(image, 18)? != EM_EXPECTED {
        return Err(ElfError::WrongMachine);
    }
    let entry = u64_at(image, 24)?;
    let phoff = u64_at(image, 32)? as usize;
    let phentsize = u16_at(image, 54)? as usize;
    let phnum = u16_at(image, 56)? as usize;
    for i in 0..phnum {
        let ph = phoff.checked_add(i * phentsize).ok_or(ElfError::Truncated)?;
        if u32_at(image, ph)? != PT_LOAD {
            continue;
        }
        let flags = u32_at(image, ph + 4)?;
        let offset = u64_at(image, ph + 8)?;
        let vaddr = u64_at(image, ph + 16)?;
        let filesz = u64_at(image, ph + 32)?;
        let memsz = u64_at(image, ph + 40)?;
        let end = vaddr.checked_add(memsz).ok_or(ElfError::BadSegment)?;
        if filesz > memsz || end > USER_TOP || vaddr < PAGE_SIZE {
            return Err(ElfError::BadSegment);
        }
        let file_end = offset.checked_add(filesz).ok_or(ElfError::BadSegment)?;
        let data = image.get(offset as usize..file_end as usize).ok_or(ElfError::Truncated)?;
        let map_flags = MapFlags { writable: flags & PF_W != 0, executable: flags & PF_X != 0, device: false };
        let mut page = vaddr & !(PAGE_SIZE - 1);
        while page < end {
            let frame = frames.alloc().ok_or(ElfError::OutOfMemory)?;
            owned.push(frame);
            // Copy the part of the file image that falls in this page; the rest stays zero.
            let copy_start = page.max(vaddr);
            let copy_end = (page + PAGE_SIZE).min(vaddr + filesz);
            if copy_start < copy_end {
                let src = &data[(copy_start - vaddr) as usize..(copy_end - vaddr) as usize];
                // SAFETY: `frame` is a fresh frame in the direct map; the destination range
                // lies inside it (copy_start - page < PAGE_SIZE, length <= the remainder).
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        phys_to_virt(frame).add((copy_start - page) as usize),
                        src.len(),
                    )
                };
            }
            space.map(page, frame, map_flags, frames).map_err(|_| ElfError::BadSegment)?;
            page += PAGE_SIZE;
        }
    }
    if entry == 0 || entry >= USER_TOP {
        return Err(ElfError::BadSegment);
    }
    Ok(entry)
}
