//! The client library of the IOMMU server: what a driver uses to talk to it. A driver holds a
//! [`Connection`] and calls one typed method per operation; this crate owns how the request
//! gets there.
//!
//! * [`client`]: [`Iommu`], one typed method per operation of the protocol (`iommu_abi`), over
//!   any [`Transport`].
//! * [`window`]: [`WindowTransport`], the kernel transport of `iommu_abi::kernel_ipc` (a
//!   message window the server lends at connect, one kernel `call` per request), generic over
//!   the few system calls it makes ([`SystemCalls`]).
//! * On the bare-metal targets, [`KernelCalls`] (those system calls, through `userlib`) and
//!   [`connect`]. Host tests run the same transport against a simulated kernel and server.
//!
//! Dependencies point one way: drivers -> this crate -> `iommu-abi` (the protocol), which the
//! server's object model (`iommu-core`) implements.
#![cfg_attr(not(test), no_std)]

pub mod client;
#[cfg(target_os = "none")]
mod kernel;
pub mod window;

#[cfg(test)]
mod tests;

pub use client::{DirtyBits, HwptOptions, Iommu, IovaRangesPage, Transport};
#[cfg(target_os = "none")]
pub use kernel::{connect, reconnect, Connection, KernelCalls};
pub use window::{CallReply, SystemCalls, WindowPlace, WindowTransport};
