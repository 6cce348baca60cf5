//! Untrusted user memory. A [`UserSlice`] can only be built through [`UserSlice::new`], whose
//! checks (no wrap past the top of the address space, entirely below `USER_TOP`) are
//! load-bearing: every kernel path that reads user memory goes through it, and reads go through
//! the process's page tables into the direct map, never by dereferencing the user pointer.

use crate::arch::{paging::AddressSpace, PAGE_SIZE, USER_TOP};
use crate::mm::phys_to_virt;
use kernel_abi::Error;

#[derive(Debug, Clone, Copy)]
pub struct UserSlice {
    addr: u64,
    len: u64,
}

impl UserSlice {
    pub fn new(addr: u64, len: u64) -> Result<UserSlice, Error> {
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end > USER_TOP {
            return Err(Error::BadAddress);
        }
        Ok(UserSlice { addr, len })
    }

    /// Copies the slice into `out` (which must be exactly `len` bytes). Fails with BadAddress
    /// if any page is unmapped.
    pub fn copy_into(&self, space: &AddressSpace, out: &mut [u8]) -> Result<(), Error> {
        assert_eq!(out.len() as u64, self.len);
        let mut done = 0u64;
        while done < self.len {
            let va = self.addr + done;
            let in_page = (PAGE_SIZE - va % PAGE_SIZE).min(self.len - done);
            let (pa, _) = space.translate(va).ok_or(Error::BadAddress)?;
            // SAFETY: `pa..pa + in_page` lies within one physical page mapped for the user,
            // which is RAM or device memory in the direct map; reading it cannot fault.
            let src = unsafe { core::slice::from_raw_parts(phys_to_virt(pa), in_page as usize) };
            out[done as usize..(done + in_page) as usize].copy_from_slice(src);
            done += in_page;
        }
        Ok(())
    }
}

impl UserSlice {
    /// Copies `data` (exactly `len` bytes) into the slice. Fails with BadAddress, writing
    /// nothing, unless every page is mapped writable.
    pub fn copy_from(&self, space: &AddressSpace, data: &[u8]) -> Result<(), Error> {
        assert_eq!(data.len() as u64, self.len);
        let first = self.addr & !(PAGE_SIZE - 1);
        let mut page = first;
        while page < self.addr + self.len {
            match space.translate(page) {
                Some((_, flags)) if flags.writable && !flags.device => {}
                _ => return Err(Error::BadAddress),
            }
            page += PAGE_SIZE;
        }
        let mut done = 0u64;
        while done < self.len {
            let va = self.addr + done;
            let in_page = (PAGE_SIZE - va % PAGE_SIZE).min(self.len - done);
            let (pa, _) = space.translate(va).ok_or(Error::BadAddress)?;
            // SAFETY: `pa..pa + in_page` lies within one writable RAM page of the user's, in the
            // direct map; the kernel holds no other reference to it.
            let dst = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(pa), in_page as usize) };
            dst.copy_from_slice(&data[done as usize..(done + in_page) as usize]);
            done += in_page;
        }
        Ok(())
    }
}
