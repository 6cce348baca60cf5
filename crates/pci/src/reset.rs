//! Resetting a function before it goes to another owner, so that nothing one driver left in
//! the device reaches the next.
//!
//! The methods, best first (the order a PCI Express system prefers them in):
//! - **Function-level reset** through the PCI Express capability (PCI Express 4.0, 6.6.2):
//!   Device Capabilities bit 28 says the function has it, Device Control bit 15 starts it.
//! - **Function-level reset** through the Advanced Features capability (ID 13h, PCI Advanced
//!   Capabilities ECN), for conventional functions; offered only with its Transactions Pending
//!   bit, which says when it is safe to start.
//! - **Power-management reset** (PCI Bus Power Management 1.2, 5.4): D0 → D3hot → D0 resets
//!   the function's state when PMCSR bit 3 No_Soft_Reset is clear.
//! - **Secondary bus reset** of the bridge above (PCI-to-PCI Bridge 1.2, 3.2.5.18: Bridge
//!   Control bit 6): resets every function below the bridge, so it is offered only when the
//!   function is the only one there; otherwise it would reset a device another owner holds.
//!
//! Every wait is a bounded number of polls with a pause between them, the pause taken from a
//! [`Delay`]: the IOMMU server's waits on the instruction counter, a host test's advance a
//! simulated clock.
//!
//! A reset also clears what the configuration owner set up (BARs, command register, PCI
//! Express control); [`reset_function`] saves that first and writes it back once the function
//! answers again. It does not restore the MSI capability: the owner reprograms it for the next
//! driver that asks.

use alloc::vec::Vec;
use core::fmt;

use crate::enumerate::Topology;
use crate::regs::{self, command};
use crate::{Address, ConfigAccess};

/// What the waits of a reset take their time from.
pub trait Delay {
    /// Returns once at least `milliseconds` have passed.
    fn wait_ms(&mut self, milliseconds: u32);
}

/// A way to reset one function, with where its registers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// PCI Express function-level reset; `express` is the offset of the PCI Express capability.
    ExpressFlr { express: u16 },
    /// Advanced Features function-level reset; `features` is the capability's offset.
    AdvancedFeaturesFlr { features: u16 },
    /// D3hot and back to D0; `power` is the power-management capability's offset.
    PowerManagement { power: u16 },
    /// Secondary bus reset of the bridge at `bridge`, below which the function is alone.
    SecondaryBus { bridge: Address },
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::ExpressFlr { .. } => write!(f, "PCI Express function-level reset"),
            Method::AdvancedFeaturesFlr { .. } => write!(f, "Advanced Features function-level reset"),
            Method::PowerManagement { .. } => write!(f, "D3hot and back to D0"),
            Method::SecondaryBus { bridge } => write!(f, "secondary bus reset by the bridge at {bridge}"),
        }
    }
}

/// Why a reset did not leave the function usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetError {
    /// The function did not answer configuration reads within [`READY_POLLS`] polls.
    NotReady,
}

/// What [`reset_function`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reset with `method` and its configuration restored. `pending` says the function still
    /// had transactions pending when the wait for them ran out (the reset went ahead, as the
    /// specification allows once the completion timeout has passed).
    Reset { method: Method, pending: bool },
    /// The function has no method: it was only quiesced (bus mastering and MSIs off).
    NoMethod,
    /// The reset was started but the function did not come back; its configuration was
    /// written back all the same.
    Failed { method: Method, error: ResetError },
}

/// Capability IDs (PCI 3.0, appendix H).
const CAP_ID_POWER_MANAGEMENT: u8 = 0x01;
const CAP_ID_MSI: u8 = 0x05;
const CAP_ID_MSI_X: u8 = 0x11;
const CAP_ID_ADVANCED_FEATURES: u8 = 0x13;

/// PCI Express capability registers (PCI Express 4.0, 7.5.3), offsets from the capability.
mod express {
    /// Device Capabilities; bit 28: Function Level Reset Capability.
    pub const DEVICE_CAPABILITIES: u16 = 0x04;
    pub const FLR_CAPABLE: u32 = 1 << 28;
    /// Device Control [15:0] and Device Status [31:16] (whose bits are write-one-to-clear:
    /// written as zeros). Control bit 15: Initiate Function Level Reset; status bit 5:
    /// Transactions Pending.
    pub const DEVICE_CONTROL: u16 = 0x08;
    pub const INITIATE_FLR: u32 = 1 << 15;
    pub const TRANSACTIONS_PENDING: u32 = 1 << (16 + 5);
    /// Device Control 2 [15:0] (capability version 2 and later; the status half is reserved).
    pub const DEVICE_CONTROL_2: u16 = 0x28;
    /// Capability version, bits 3:0 of the PCI Express Capabilities register (bits 19:16 of
    /// the first dword).
    pub const VERSION_SHIFT: u32 = 16;
    pub const VERSION_MASK: u32 = 0xf;
}

/// Advanced Features capability: the first dword holds the AF Capabilities byte [31:24]
/// (bit 0 Transactions Pending supported, bit 1 FLR supported); the second the AF Control
/// byte [7:0] (bit 0 Initiate FLR) and the AF Status byte [15:8] (bit 0 Transactions Pending).
mod features {
    pub const TP_CAPABLE: u32 = 1 << 24;
    pub const FLR_CAPABLE: u32 = 1 << 25;
    pub const CONTROL: u16 = 0x04;
    pub const INITIATE_FLR: u32 = 1 << 0;
    pub const TRANSACTIONS_PENDING: u32 = 1 << 8;
}

/// Power-management capability: PMCSR is the low half of the second dword: power state bits
/// 1:0 (0 D0, 3 D3hot), bit 3 No_Soft_Reset, bit 15 PME_Status (write-one-to-clear: written
/// as zero). The upper half is read-only.
mod power {
    pub const CONTROL_STATUS: u16 = 0x04;
    pub const STATE_MASK: u32 = 0b11;
    pub const D0: u32 = 0b00;
    pub const D3_HOT: u32 = 0b11;
    pub const NO_SOFT_RESET: u32 = 1 << 3;
    pub const PME_STATUS: u32 = 1 << 15;
}

/// MSI Message Control (upper half of the capability's first dword) bit 0: enable; MSI-X
/// Message Control bit 15: enable (PCI 3.0, 6.8.1.3 and 6.8.2.3).
const MSI_ENABLE: u32 = 1 << 16;
const MSI_X_ENABLE: u32 = 1 << 31;

/// Type 1 header: Bridge Control [31:16] of the dword at 3Ch (interrupt line and pin below it);
/// bit 6 Secondary Bus Reset.
const BRIDGE_CONTROL: u16 = 0x3c;
const SECONDARY_BUS_RESET: u32 = 1 << (16 + 6);

/// Polls of Transactions Pending before a function-level reset, `POLL_MS` apart: 80 ms, more
/// than the 50 ms a completion timeout lasts by default (PCI Express 4.0, 7.5.3.16), after
/// which nothing can still be in flight.
pub const PENDING_POLLS: u32 = 8;
pub const POLL_MS: u32 = 10;
/// After a function-level reset or a secondary bus reset, no configuration request for
/// 100 ms (PCI Express 4.0, 6.6.1 and 6.6.2).
pub const AFTER_RESET_MS: u32 = 100;
/// Secondary Bus Reset held for at least Trst, 1 ms (PCI 3.0, 4.3.2); 2 ms as margin.
pub const BUS_RESET_HOLD_MS: u32 = 2;
/// D3hot → D0 and D0 → D3hot take 10 ms to settle (PCI Bus Power Management 1.2, 5.6.1).
pub const POWER_STATE_MS: u32 = 10;
/// Polls of the ID register until the function answers, `POLL_MS` apart: with the first wait
/// one second, the longest a function may answer with retry status after a reset.
pub const READY_POLLS: u32 = 90;

/// The offset of capability `id` in the function's list, walking from 34h (bounded: the 192
/// bytes after the header hold at most 48 capabilities, so a looping list ends there).
pub fn find_capability<C: ConfigAccess>(config: &mut C, address: Address, id: u8) -> Option<u16> {
    if config.read32(address, regs::COMMAND) & regs::STATUS_CAPABILITIES_LIST == 0 {
        return None;
    }
    let mut at = u16::from(config.read8(address, regs::CAPABILITIES_POINTER) & !3);
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        let header = config.read32(address, at);
        if header as u8 == id {
            return Some(at);
        }
        at = u16::from((header >> 8) as u8 & !3);
    }
    None
}

impl Topology {
    /// The ways the function at `index` can be reset, best first; empty for a bridge (whose
    /// reset would take its bus numbers and windows, and everything below, with it) and for a
    /// function with none.
    pub fn reset_methods<C: ConfigAccess>(&self, config: &mut C, index: usize) -> Vec<Method> {
        let function = &self.functions[index];
        let address = function.address;
        let mut methods = Vec::new();
        if function.bridge.is_some() || (config.read32(address, regs::HEADER_DWORD) >> regs::HEADER_SHIFT) as u8 & regs::HEADER_LAYOUT != 0 {
            return methods;
        }
        if let Some(express) = find_capability(config, address, regs::CAP_ID_PCI_EXPRESS) {
            if config.read32(address, express + express::DEVICE_CAPABILITIES) & express::FLR_CAPABLE != 0 {
                methods.push(Method::ExpressFlr { express });
            }
        }
        if let Some(features) = find_capability(config, address, CAP_ID_ADVANCED_FEATURES) {
            let wanted = features::TP_CAPABLE | features::FLR_CAPABLE;
            if config.read32(address, features) & wanted == wanted {
                methods.push(Method::AdvancedFeaturesFlr { features });
            }
        }
        if let Some(power) = find_capability(config, address, CAP_ID_POWER_MANAGEMENT) {
            let status = config.read32(address, power + power::CONTROL_STATUS);
            // A function that keeps its state across D3hot (No_Soft_Reset), or that is not in
            // D0 now (someone else manages its power), is not reset this way.
            if status & power::NO_SOFT_RESET == 0 && status & power::STATE_MASK == power::D0 {
                methods.push(Method::PowerManagement { power });
            }
        }
        if let Some(parent) = function.parent {
            let alone = (0..self.functions.len()).all(|other| other == index || !self.is_below(other, parent));
            if alone && self.functions[parent].bridge.is_some() {
                methods.push(Method::SecondaryBus { bridge: self.functions[parent].address });
            }
        }
        methods
    }
}

/// Stops the function reaching memory or raising interrupts: bus mastering off (its DMA and
/// MSI writes stop at the function), MSI and MSI-X disabled. Memory decoding stays as it is.
pub fn quiesce<C: ConfigAccess>(config: &mut C, address: Address) {
    // The status half is write-one-to-clear: zeros there.
    let command = config.read32(address, regs::COMMAND) & 0xffff;
    config.write32(address, regs::COMMAND, command & !command::BUS_MASTER);
    if let Some(msi) = find_capability(config, address, CAP_ID_MSI) {
        let header = config.read32(address, msi);
        config.write32(address, msi, header & !MSI_ENABLE);
    }
    if let Some(msi_x) = find_capability(config, address, CAP_ID_MSI_X) {
        let header = config.read32(address, msi_x);
        config.write32(address, msi_x, header & !MSI_X_ENABLE);
    }
}

/// What the configuration owner set up in a function (type 0 header) that a reset clears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedConfig {
    command: u32,
    bars: [u32; regs::ENDPOINT_BARS as usize],
    /// PCI Express capability offset, Device Control (without Initiate FLR) and, from
    /// version 2 on, Device Control 2.
    express: Option<(u16, u32, Option<u32>)>,
}

/// Reads what [`restore`] writes back.
pub fn save<C: ConfigAccess>(config: &mut C, address: Address) -> SavedConfig {
    let command = config.read32(address, regs::COMMAND) & 0xffff;
    let mut bars = [0; regs::ENDPOINT_BARS as usize];
    for (index, bar) in bars.iter_mut().enumerate() {
        *bar = config.read32(address, regs::BAR0 + 4 * index as u16);
    }
    let express = find_capability(config, address, regs::CAP_ID_PCI_EXPRESS).map(|at| {
        let version = (config.read32(address, at) >> express::VERSION_SHIFT) & express::VERSION_MASK;
        let control = config.read32(address, at + express::DEVICE_CONTROL) & 0xffff & !express::INITIATE_FLR;
        let control_2 = (version >= 2).then(|| config.read32(address, at + express::DEVICE_CONTROL_2) & 0xffff);
        (at, control, control_2)
    });
    SavedConfig { command, bars, express }
}

/// Writes the saved configuration back: BARs and PCI Express control first, the command
/// register (which turns decoding on) last.
pub fn restore<C: ConfigAccess>(config: &mut C, address: Address, saved: &SavedConfig) {
    for (index, &bar) in saved.bars.iter().enumerate() {
        // The low bits of a BAR are read-only: writing back what was read changes nothing there.
        config.write32(address, regs::BAR0 + 4 * index as u16, bar);
    }
    if let Some((at, control, control_2)) = saved.express {
        config.write32(address, at + express::DEVICE_CONTROL, control);
        if let Some(control_2) = control_2 {
            config.write32(address, at + express::DEVICE_CONTROL_2, control_2);
        }
    }
    config.write32(address, regs::COMMAND, saved.command);
}

/// Polls `register` until `bit` is clear, at most `PENDING_POLLS` times; whether it still was
/// set at the end.
fn wait_clear<C: ConfigAccess, D: Delay>(config: &mut C, delay: &mut D, address: Address, register: u16, bit: u32) -> bool {
    for poll in 0..PENDING_POLLS {
        if config.read32(address, register) & bit == 0 {
            return false;
        }
        if poll + 1 < PENDING_POLLS {
            delay.wait_ms(POLL_MS);
        }
    }
    true
}

/// Waits `first_ms`, then polls the ID register until the function answers: not all ones (no
/// answer) and not vendor 0001h (the value a configuration request retry status reads as).
fn wait_ready<C: ConfigAccess, D: Delay>(config: &mut C, delay: &mut D, address: Address, first_ms: u32) -> Result<(), ResetError> {
    delay.wait_ms(first_ms);
    for poll in 0..READY_POLLS {
        let vendor = config.read32(address, regs::ID) as u16;
        if vendor != regs::NO_VENDOR && vendor != 0x0001 {
            return Ok(());
        }
        if poll + 1 < READY_POLLS {
            delay.wait_ms(POLL_MS);
        }
    }
    Err(ResetError::NotReady)
}

/// Resets the function at `address` with `method` and waits until it answers again; returns
/// whether transactions were still pending when a function-level reset was started. The
/// caller has quiesced the function and saved its configuration.
pub fn reset<C: ConfigAccess, D: Delay>(config: &mut C, delay: &mut D, address: Address, method: Method) -> Result<bool, ResetError> {
    match method {
        Method::ExpressFlr { express } => {
            let control = express + express::DEVICE_CONTROL;
            let pending = wait_clear(config, delay, address, control, express::TRANSACTIONS_PENDING);
            let value = config.read32(address, control) & 0xffff;
            config.write32(address, control, value | express::INITIATE_FLR);
            wait_ready(config, delay, address, AFTER_RESET_MS)?;
            Ok(pending)
        }
        Method::AdvancedFeaturesFlr { features } => {
            let control = features + features::CONTROL;
            let pending = wait_clear(config, delay, address, control, features::TRANSACTIONS_PENDING);
            config.write32(address, control, features::INITIATE_FLR);
            wait_ready(config, delay, address, AFTER_RESET_MS)?;
            Ok(pending)
        }
        Method::PowerManagement { power } => {
            let at = power + power::CONTROL_STATUS;
            let kept = config.read32(address, at) & 0xffff & !(power::STATE_MASK | power::PME_STATUS);
            config.write32(address, at, kept | power::D3_HOT);
            delay.wait_ms(POWER_STATE_MS);
            config.write32(address, at, kept | power::D0);
            wait_ready(config, delay, address, POWER_STATE_MS)?;
            Ok(false)
        }
        Method::SecondaryBus { bridge } => {
            // Interrupt line below Bridge Control is read-write: written back as read.
            let value = config.read32(bridge, BRIDGE_CONTROL);
            config.write32(bridge, BRIDGE_CONTROL, value | SECONDARY_BUS_RESET);
            delay.wait_ms(BUS_RESET_HOLD_MS);
            config.write32(bridge, BRIDGE_CONTROL, value & !SECONDARY_BUS_RESET);
            wait_ready(config, delay, address, AFTER_RESET_MS)?;
            Ok(false)
        }
    }
}

/// Quiesces the function at `index`, and resets it with its best method, its configuration
/// saved before and restored after (the order of Linux's `pci_reset_function`). Without a
/// method the function is only quiesced.
pub fn reset_function<C: ConfigAccess, D: Delay>(config: &mut C, delay: &mut D, topology: &Topology, index: usize) -> Outcome {
    let address = topology.functions[index].address;
    quiesce(config, address);
    let Some(&method) = topology.reset_methods(config, index).first() else { return Outcome::NoMethod };
    let saved = save(config, address);
    let result = reset(config, delay, address, method);
    restore(config, address, &saved);
    match result {
        Ok(pending) => Outcome::Reset { method, pending },
        Err(error) => Outcome::Failed { method, error },
    }
}
