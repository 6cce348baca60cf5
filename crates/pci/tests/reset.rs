//! Function reset against a simulated machine whose functions behave as the specifications
//! say: a function-level reset, a D3hot → D0 transition without No_Soft_Reset and a secondary
//! bus reset put a function back to its power-on configuration, and for 100 ms after a reset
//! (10 ms after D0) a function does not answer: reads return all ones and writes are lost. The
//! clock is the simulation's; the reset code waits through a `Delay` that advances it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use pci::reset::{self, Delay, Method, Outcome, ResetError};
use pci::{enumerate, Address, BusNumbers, ConfigAccess, Topology};

const BAR0_BASE: u32 = 0xfe00_0000;
/// Command: memory decoding and bus mastering, as a driver's owner leaves them.
const MEMORY_AND_MASTER: u32 = 0x6;
/// PCI Express capability at 40h: Device Control as configured (Max_Payload_Size 256 B,
/// relaxed ordering, no snoop).
const EXPRESS: u16 = 0x40;
const DEVICE_CONTROL_CONFIGURED: u32 = 0x0830;
/// Power management at 90h, Advanced Features at 98h, MSI at A0h (32-bit addresses: Message
/// Address at +4, Message Data at +8), after the PCI Express capability's 3Ch bytes.
const POWER: u16 = 0x90;
const FEATURES: u16 = 0x98;
const MSI: u16 = 0xa0;

/// One simulated function.
struct Function {
    space: Vec<u32>,
    writable: Vec<u32>,
    power_on: Vec<u32>,
    /// Until this time (ms) Device Status shows Transactions Pending.
    pending_until: u64,
    /// It never answers again after a reset.
    dead_after_reset: bool,
    /// Until this time (ms) it does not answer.
    unready_until: u64,
    /// (time, transactions were pending) of each reset this function went through.
    resets: Vec<(u64, bool)>,
    /// Writes it lost while not answering.
    lost_writes: u32,
}

impl Function {
    fn new(id: u32, layout: u32) -> Function {
        let mut space = vec![0; 1024];
        let mut writable = vec![0; 1024];
        space[0] = id;
        space[3] = layout << 16;
        writable[1] = 0x0000_0407;
        Function { power_on: space.clone(), space, writable, pending_until: 0, dead_after_reset: false, unready_until: 0, resets: Vec::new(), lost_writes: 0 }
    }

    /// An endpoint at power-on with a 1 MiB BAR0 and an MSI capability.
    fn endpoint() -> Function {
        let mut f = Function::new(0x11e8_1234, 0);
        f.writable[4] = 0xfff0_0000;
        f.add_capability(MSI, 0x05, 0, 0x0001_0000);
        f.writable[usize::from(MSI / 4) + 1] = 0xffff_fffc;
        f.writable[usize::from(MSI / 4) + 2] = 0xffff;
        f
    }

    /// As the server and a driver leave it: BAR0 placed, decoding memory, bus mastering, MSI
    /// enabled with the owner's address and data, Device Control configured. The last step
    /// of building a function.
    fn left_by_owner(mut self) -> Function {
        self.space[4] = BAR0_BASE;
        self.space[1] |= MEMORY_AND_MASTER;
        self.space[usize::from(MSI / 4)] |= 0x0001_0000;
        self.space[usize::from(MSI / 4) + 1] = 0xfee0_0000;
        self.space[usize::from(MSI / 4) + 2] = 0x0051;
        if self.register(EXPRESS) & 0xff == 0x10 {
            self.space[usize::from(EXPRESS / 4) + 2] = DEVICE_CONTROL_CONFIGURED;
            self.space[usize::from(EXPRESS / 4) + 10] = 0x0400;
        }
        self
    }

    fn bridge(primary: u8, secondary: u8) -> Function {
        let mut f = Function::new(0x000c_1b36, 1);
        f.writable[6] = 0x00ff_ffff;
        f.writable[15] = 0xffff_00ff;
        f.space[6] = u32::from(secondary) << 16 | u32::from(secondary) << 8 | u32::from(primary);
        f.power_on.clone_from(&f.space);
        f
    }

    /// Appends capability `id` at `at` with `header_high` in its first dword's upper half
    /// (those bits of it in `writable_high` writable).
    fn add_capability(&mut self, at: u16, id: u32, header_high: u32, writable_high: u32) {
        let index = usize::from(at / 4);
        self.space[index] = id | header_high;
        self.writable[index] = writable_high;
        // Link it at the end of the list.
        if self.space[1] & 1 << 20 == 0 {
            self.space[1] |= 1 << 20;
            self.space[0x34 / 4] = u32::from(at);
        } else {
            let mut last = self.space[0x34 / 4] as u16;
            while (self.space[usize::from(last / 4)] >> 8) as u8 != 0 {
                last = u16::from((self.space[usize::from(last / 4)] >> 8) as u8);
            }
            self.space[usize::from(last / 4)] |= u32::from(at) << 8;
        }
        self.power_on.clone_from(&self.space);
    }

    /// PCI Express capability, function-level reset capable or not, Device Control configured.
    fn with_express(mut self, flr: bool) -> Function {
        // Capability version 2, endpoint.
        self.add_capability(EXPRESS, 0x10, 0x0002_0000, 0);
        self.space[usize::from(EXPRESS / 4) + 1] = if flr { 1 << 28 } else { 0 };
        self.writable[usize::from(EXPRESS / 4) + 2] = 0xffff;
        self.writable[usize::from(EXPRESS / 4) + 10] = 0xffff;
        self.power_on.clone_from(&self.space);
        self
    }

    fn with_power_management(mut self, no_soft_reset: bool) -> Function {
        self.add_capability(POWER, 0x01, 0x0003_0000, 0);
        self.space[usize::from(POWER / 4) + 1] = if no_soft_reset { 1 << 3 } else { 0 };
        self.writable[usize::from(POWER / 4) + 1] = 0x0000_0103;
        self.power_on.clone_from(&self.space);
        self
    }

    fn with_advanced_features(mut self, capabilities: u32) -> Function {
        self.add_capability(FEATURES, 0x13, 0x0006_0000 | capabilities << 24, 0);
        self.writable[usize::from(FEATURES / 4) + 1] = 0x01;
        self.power_on.clone_from(&self.space);
        self
    }

    fn reset(&mut self, now: u64, recovery_ms: u64) {
        let pending = now < self.pending_until;
        self.resets.push((now, pending));
        self.space.clone_from(&self.power_on);
        self.unready_until = if self.dead_after_reset { u64::MAX } else { now + recovery_ms };
    }

    fn register(&self, offset: u16) -> u32 {
        self.space[usize::from(offset / 4)]
    }
}

/// Functions by address (bus numbers as firmware assigned them), and the clock.
struct Machine {
    functions: BTreeMap<Address, Function>,
    now: Rc<Cell<u64>>,
    /// Since when a bridge holds Secondary Bus Reset, and for how long each hold lasted.
    held_since: BTreeMap<Address, u64>,
    holds: Vec<u64>,
    /// D3hot entered at this time; the time each D3hot → D0 transition came after.
    d3_since: Option<u64>,
    d3_stays: Vec<u64>,
}

impl Machine {
    fn new(functions: Vec<(Address, Function)>) -> Machine {
        Machine { functions: functions.into_iter().collect(), now: Rc::new(Cell::new(0)), held_since: BTreeMap::new(), holds: Vec::new(), d3_since: None, d3_stays: Vec::new() }
    }

    fn topology(&mut self) -> Topology {
        enumerate(self, 0, 0, 255, BusNumbers::Firmware)
    }

    fn delay(&self) -> Clock {
        Clock { now: self.now.clone(), waits: Vec::new() }
    }

    fn function(&self, address: Address) -> &Function {
        &self.functions[&address]
    }

    fn function_mut(&mut self, address: Address) -> &mut Function {
        self.functions.get_mut(&address).expect("a simulated function")
    }

    fn express_write(&mut self, address: Address, offset: u16, now: u64) {
        let function = self.function_mut(address);
        let control = function.register(EXPRESS + 8);
        if offset == EXPRESS + 8 && control & 1 << 15 != 0 && function.space[usize::from(EXPRESS / 4) + 1] & 1 << 28 != 0 {
            function.reset(now, 100);
        }
    }

    fn bridge_write(&mut self, address: Address, before: u32, now: u64) {
        let after = self.function(address).register(0x3c);
        let bit = 1 << 22;
        if before & bit == 0 && after & bit != 0 {
            self.held_since.insert(address, now);
            let buses = self.function(address).register(0x18);
            let (secondary, subordinate) = ((buses >> 8) as u8, (buses >> 16) as u8);
            for (below, function) in self.functions.iter_mut() {
                if (secondary..=subordinate).contains(&below.bus) {
                    function.reset(now, 100);
                }
            }
        } else if before & bit != 0 && after & bit == 0 {
            let since = self.held_since.remove(&address).expect("held");
            self.holds.push(now - since);
        }
    }

    fn power_write(&mut self, address: Address, before: u32, now: u64) {
        let after = self.function(address).register(POWER + 4);
        match (before & 3, after & 3) {
            (0, 3) => self.d3_since = Some(now),
            (3, 0) => {
                self.d3_stays.push(now - self.d3_since.take().expect("in D3hot"));
                if after & 1 << 3 == 0 {
                    self.function_mut(address).reset(now, 10);
                }
            }
            _ => {}
        }
    }
}

impl ConfigAccess for Machine {
    fn read32(&mut self, address: Address, offset: u16) -> u32 {
        let now = self.now.get();
        let Some(function) = self.functions.get_mut(&address) else { return u32::MAX };
        if now < function.unready_until {
            return u32::MAX;
        }
        let pending = offset == EXPRESS + 8 && now < function.pending_until;
        function.register(offset) | if pending { 1 << 21 } else { 0 }
    }

    fn write32(&mut self, address: Address, offset: u16, value: u32) {
        let now = self.now.get();
        let Some(function) = self.functions.get_mut(&address) else { return };
        if now < function.unready_until {
            function.lost_writes += 1;
            return;
        }
        let index = usize::from(offset / 4);
        let before = function.space[index];
        function.space[index] = (before & !function.writable[index]) | (value & function.writable[index]);
        let has = |f: &Function, at: u16, id: u32| f.register(at) & 0xff == id && f.register(0x04) & 1 << 20 != 0;
        if has(function, EXPRESS, 0x10) && offset == EXPRESS + 8 {
            self.express_write(address, offset, now);
        } else if has(function, FEATURES, 0x13) && offset == FEATURES + 4 && value & 1 != 0 {
            function.reset(now, 100);
        } else if has(function, POWER, 0x01) && offset == POWER + 4 {
            self.power_write(address, before, now);
        } else if offset == 0x3c && function.register(0x0c) >> 16 & 0x7f == 1 {
            self.bridge_write(address, before, now);
        }
    }
}

/// The reset code's clock: every wait advances the simulation's.
struct Clock {
    now: Rc<Cell<u64>>,
    waits: Vec<u32>,
}

impl Delay for Clock {
    fn wait_ms(&mut self, milliseconds: u32) {
        self.waits.push(milliseconds);
        self.now.set(self.now.get() + u64::from(milliseconds));
    }
}

fn at(bus: u8, device: u8) -> Address {
    Address::new(0, bus, device, 0)
}

/// Resets the function at `address` of `machine` as the server does.
fn reset_at(machine: &mut Machine, address: Address) -> (Outcome, Clock) {
    let topology = machine.topology();
    let index = topology.find(address).expect("enumerated");
    let mut clock = machine.delay();
    let outcome = reset::reset_function(machine, &mut clock, &topology, index);
    (outcome, clock)
}

/// What an owner left that the reset must clear, and what the server set up that it must
/// write back: BAR0 placed, memory decoding on, bus mastering off, the MSI capability off and
/// empty, Device Control as configured, and nothing written while the function could not take it.
fn assert_reset_and_restored(function: &Function) {
    assert_eq!(function.lost_writes, 0, "configuration written while the function did not answer");
    assert_eq!(function.register(0x10), BAR0_BASE, "BAR0 not restored");
    assert_eq!(function.register(0x04) & 0x7, 0x2, "command: memory decoding restored, bus mastering off");
    assert_eq!(function.register(MSI) >> 16 & 1, 0, "MSI left enabled");
    assert_eq!((function.register(MSI + 4), function.register(MSI + 8)), (0, 0), "the owner's MSI address and data survived");
}

#[test]
fn express_flr_waits_for_pending_transactions_and_100_ms_then_restores() {
    let mut function = Function::endpoint().with_express(true).left_by_owner();
    function.pending_until = 25;
    let mut machine = Machine::new(vec![(at(0, 1), function)]);
    let (outcome, clock) = reset_at(&mut machine, at(0, 1));
    assert_eq!(outcome, Outcome::Reset { method: Method::ExpressFlr { express: EXPRESS }, pending: false });
    let function = machine.function(at(0, 1));
    assert_eq!(function.resets, [(30, false)], "one FLR, started once Transactions Pending cleared (three polls 10 ms apart)");
    assert_eq!(clock.waits, [10, 10, 10, 100], "10 ms between polls of Transactions Pending, 100 ms after the FLR");
    assert_reset_and_restored(function);
    assert_eq!(function.register(EXPRESS + 8) & 0xffff, DEVICE_CONTROL_CONFIGURED, "Device Control not restored");
    assert_eq!(function.register(EXPRESS + 0x28) & 0xffff, 0x0400, "Device Control 2 not restored");
}

#[test]
fn transactions_that_stay_pending_are_waited_for_a_bounded_time() {
    let mut function = Function::endpoint().with_express(true).left_by_owner();
    function.pending_until = u64::MAX;
    let mut machine = Machine::new(vec![(at(0, 1), function)]);
    let (outcome, clock) = reset_at(&mut machine, at(0, 1));
    assert_eq!(outcome, Outcome::Reset { method: Method::ExpressFlr { express: EXPRESS }, pending: true });
    let polled_ms = u64::from((reset::PENDING_POLLS - 1) * reset::POLL_MS);
    assert_eq!(machine.function(at(0, 1)).resets, [(polled_ms, true)], "the FLR goes ahead after the bounded wait");
    assert_eq!(clock.waits.iter().sum::<u32>(), (reset::PENDING_POLLS - 1) * reset::POLL_MS + reset::AFTER_RESET_MS);
    assert_reset_and_restored(machine.function(at(0, 1)));
}

#[test]
fn a_function_that_never_answers_again_fails_after_bounded_polls() {
    let mut function = Function::endpoint().with_express(true).left_by_owner();
    function.dead_after_reset = true;
    let mut machine = Machine::new(vec![(at(0, 1), function)]);
    let (outcome, clock) = reset_at(&mut machine, at(0, 1));
    assert_eq!(outcome, Outcome::Failed { method: Method::ExpressFlr { express: EXPRESS }, error: ResetError::NotReady });
    assert_eq!(clock.waits.len() as u32, 1 + reset::READY_POLLS - 1, "100 ms, then a poll every 10 ms, a bounded number of them");
    assert_eq!(clock.waits.iter().sum::<u32>(), reset::AFTER_RESET_MS + (reset::READY_POLLS - 1) * reset::POLL_MS);
}

#[test]
fn secondary_bus_reset_only_for_a_function_alone_below_its_bridge() {
    // A root port (bus 1) with one endpoint, a bridge (bus 2) with two.
    let mut machine = Machine::new(vec![
        (at(0, 2), Function::bridge(0, 1)),
        (at(1, 0), Function::endpoint().left_by_owner()),
        (at(0, 3), Function::bridge(0, 2)),
        (at(2, 1), Function::endpoint().left_by_owner()),
        (at(2, 2), Function::endpoint().left_by_owner()),
    ]);
    let topology = machine.topology();
    let methods = |machine: &mut Machine, address| topology.reset_methods(machine, topology.find(address).expect("enumerated"));
    assert_eq!(methods(&mut machine, at(1, 0)), [Method::SecondaryBus { bridge: at(0, 2) }]);
    assert_eq!(methods(&mut machine, at(2, 1)), [], "a bus reset would reset the other function behind the bridge");
    assert_eq!(methods(&mut machine, at(0, 2)), [], "bridges are not reset");
    let bridge_buses = machine.function(at(0, 2)).register(0x18);

    let (outcome, clock) = reset_at(&mut machine, at(1, 0));
    assert_eq!(outcome, Outcome::Reset { method: Method::SecondaryBus { bridge: at(0, 2) }, pending: false });
    assert_eq!(machine.holds, [u64::from(reset::BUS_RESET_HOLD_MS)], "Secondary Bus Reset held, then released");
    assert!(machine.holds[0] >= 1, "held for less than Trst");
    assert_eq!(clock.waits, [reset::BUS_RESET_HOLD_MS, reset::AFTER_RESET_MS]);
    assert_reset_and_restored(machine.function(at(1, 0)));
    assert_eq!(machine.function(at(0, 2)).register(0x18), bridge_buses, "the bridge's own configuration changed");
    for other in [at(2, 1), at(2, 2)] {
        assert!(machine.function(other).resets.is_empty(), "{other} behind another bridge was reset");
    }

    let (outcome, clock) = reset_at(&mut machine, at(2, 1));
    assert_eq!(outcome, Outcome::NoMethod);
    assert!(clock.waits.is_empty());
    assert!(machine.function(at(2, 2)).resets.is_empty(), "the sibling was reset");
    let quiesced = machine.function(at(2, 1));
    assert_eq!(quiesced.register(0x04) & 0x7, 0x2, "bus mastering left on");
    assert_eq!(quiesced.register(MSI) >> 16 & 1, 0, "MSI left enabled");
    assert_eq!(quiesced.register(0x10), BAR0_BASE, "quiescing moved BAR0");
}

#[test]
fn power_management_reset_goes_through_d3hot_unless_the_function_keeps_its_state() {
    let mut machine = Machine::new(vec![(at(0, 1), Function::endpoint().with_power_management(false).left_by_owner()), (at(0, 2), Function::endpoint().with_power_management(true).left_by_owner())]);
    let (outcome, clock) = reset_at(&mut machine, at(0, 1));
    assert_eq!(outcome, Outcome::Reset { method: Method::PowerManagement { power: POWER }, pending: false });
    assert_eq!(machine.d3_stays, [u64::from(reset::POWER_STATE_MS)], "D3hot left before it settled");
    assert_eq!(clock.waits, [reset::POWER_STATE_MS, reset::POWER_STATE_MS]);
    assert_eq!(machine.function(at(0, 1)).register(POWER + 4) & 3, 0, "left in D3hot");
    assert_reset_and_restored(machine.function(at(0, 1)));

    let (outcome, _) = reset_at(&mut machine, at(0, 2));
    assert_eq!(outcome, Outcome::NoMethod, "No_Soft_Reset: D3hot keeps the owner's state");
    assert!(machine.d3_stays.len() == 1, "a No_Soft_Reset function was put into D3hot");
}

#[test]
fn advanced_features_flr_needs_both_its_capability_bits() {
    let mut machine = Machine::new(vec![
        (at(0, 1), Function::endpoint().with_advanced_features(0b11).left_by_owner()),
        (at(0, 2), Function::endpoint().with_advanced_features(0b10).left_by_owner()),
    ]);
    let (outcome, clock) = reset_at(&mut machine, at(0, 1));
    assert_eq!(outcome, Outcome::Reset { method: Method::AdvancedFeaturesFlr { features: FEATURES }, pending: false });
    assert_eq!(clock.waits, [reset::AFTER_RESET_MS]);
    assert_reset_and_restored(machine.function(at(0, 1)));
    let (outcome, _) = reset_at(&mut machine, at(0, 2));
    assert_eq!(outcome, Outcome::NoMethod, "without Transactions Pending nothing says when an AF FLR is safe");
}

#[test]
fn the_best_method_is_chosen() {
    let mut machine = Machine::new(vec![
        (at(0, 2), Function::bridge(0, 1)),
        (at(1, 0), Function::endpoint().with_express(true).with_power_management(false).with_advanced_features(0b11).left_by_owner()),
        (at(0, 3), Function::endpoint().with_express(false).with_power_management(false).left_by_owner()),
    ]);
    let topology = machine.topology();
    let index = topology.find(at(1, 0)).expect("enumerated");
    assert_eq!(
        topology.reset_methods(&mut machine, index),
        [
            Method::ExpressFlr { express: EXPRESS },
            Method::AdvancedFeaturesFlr { features: FEATURES },
            Method::PowerManagement { power: POWER },
            Method::SecondaryBus { bridge: at(0, 2) }
        ]
    );
    let (outcome, _) = reset_at(&mut machine, at(1, 0));
    assert_eq!(outcome, Outcome::Reset { method: Method::ExpressFlr { express: EXPRESS }, pending: false });
    assert!(machine.holds.is_empty() && machine.d3_stays.is_empty(), "more than the best method ran");
    let (outcome, _) = reset_at(&mut machine, at(0, 3));
    assert_eq!(outcome, Outcome::Reset { method: Method::PowerManagement { power: POWER }, pending: false }, "a PCI Express function without FLR");
}
