//! Untrusted user memory. A [`UserSlice`] can only be built through [`UserSlice::new`], whose
//! checks (no wrap past the top of the address space, entirely below `USER_TOP`) are
//! load-bearing: every kernel path that reads user memory goes through it, and reads go through
//! the process's page tables into the direct map, never by dereferencing the user pointer.
//! Only user RAM is accessed: a page that is unmapped, not a user page, device memory (whose
//! reads have side effects, and which may lie above the direct map) or outside the direct map
//! fails the access with BadAddress (a write before anything is written).

use crate::arch::{paging::AddressSpace, PAGE_SIZE, USER_TOP};
use crate::mm::direct_map_range;
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
    /// at the first page that is not user RAM (having copied what came before it).
    pub fn copy_into(&self, space: &AddressSpace, out: &mut [u8]) -> Result<(), Error> {
        assert_eq!(out.len() as u64, self.len);
        let mut done = 0u64;
        while done < self.len {
            let va = self.addr + done;
            let in_page = (PAGE_SIZE - va % PAGE_SIZE).min(self.len - done);
            let src = kernel_address(space, va, in_page, false)?;
            // SAFETY: `src` is the direct-map address of `in_page` bytes within one page of user
            // RAM (`kernel_address`): mapped, so reading them cannot fault.
            let src = unsafe { core::slice::from_raw_parts(src, in_page as usize) };
            out[done as usize..(done + in_page) as usize].copy_from_slice(src);
            done += in_page;
        }
        Ok(())
    }

    /// Whether every page of the slice is writable user RAM.
    fn check_writable(&self, space: &AddressSpace) -> Result<(), Error> {
        let mut page = self.addr & !(PAGE_SIZE - 1);
        while page < self.addr + self.len {
            kernel_address(space, page, PAGE_SIZE, true)?;
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// Writes `values` (exactly `len / 8` of them) as little-endian words into the slice,
    /// which must be 8-byte aligned. Fails with BadAddress, writing nothing, unless every page
    /// is mapped writable.
    pub fn write_words(&self, space: &AddressSpace, values: &[u64]) -> Result<(), Error> {
        const _: () = assert!(cfg!(target_endian = "little"), "write_words copies native words");
        assert_eq!(values.len() as u64 * 8, self.len);
        if !self.addr.is_multiple_of(8) {
            return Err(Error::BadAddress);
        }
        self.check_writable(space)?;
        let mut done = 0usize;
        while done < values.len() {
            let va = self.addr + done as u64 * 8;
            // Aligned words never straddle a page: copy the words of one page at a time.
            let in_page = (((PAGE_SIZE - va % PAGE_SIZE) / 8) as usize).min(values.len() - done);
            let dst = kernel_address(space, va, in_page as u64 * 8, true)?;
            // SAFETY: `dst` is the direct-map address of `8 * in_page` bytes within one writable
            // RAM page of the user's (`kernel_address`), 8-byte aligned; the kernel holds no
            // other reference to it. Both architectures are little-endian, so the words' memory
            // representation is the little-endian encoding the ABI promises.
            unsafe {
                core::ptr::copy_nonoverlapping(values[done..].as_ptr(), dst.cast::<u64>(), in_page);
            }
            done += in_page;
        }
        Ok(())
    }
}

/// The direct-map address of the `len` bytes at user address `va`, which must lie within one
/// page of user RAM (writable, if `write`) that the direct map covers.
fn kernel_address(space: &AddressSpace, va: u64, len: u64, write: bool) -> Result<*mut u8, Error> {
    match space.translate(va) {
        Some((pa, flags)) if !flags.device && (flags.writable || !write) => direct_map_range(pa, len).ok_or(Error::BadAddress),
        _ => Err(Error::BadAddress),
    }
}
