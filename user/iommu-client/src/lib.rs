//! The client library of the IOMMU server: what a driver uses to talk to it.
//!
//! * [`client`]: [`Iommu`], one typed method per operation of the protocol (`iommu_abi`), over
//!   any [`Transport`].
#![cfg_attr(not(test), no_std)]

pub mod client;

#[cfg(test)]
mod tests;

pub use client::{HwptOptions, Iommu, IovaRangesPage, Transport};
