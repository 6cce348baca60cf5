//! Capability spaces and the derivation tree.
//!
//! Every capability has a kernel-wide id. The derivation tree records which capability each
//! one was derived (or granted, or transferred by IPC) from, so that revoking a capability can
//! find every descendant in every process. Deleting a capability re-parents its children to its
//! own parent: a revoke of an ancestor still reaches them.

use crate::object::Object;
use crate::process::Pid;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use kernel_abi::{Error, Rights, CSPACE_SLOTS};

pub type CapId = u64;

#[derive(Debug, Clone)]
pub struct Capability {
    pub id: CapId,
    pub object: Object,
    pub rights: Rights,
    pub badge: u64,
}

/// A process's slots.
pub struct CSpace {
    slots: Vec<Option<Capability>>,
}

impl CSpace {
    pub fn new() -> CSpace {
        CSpace { slots: (0..CSPACE_SLOTS).map(|_| None).collect() }
    }

    pub fn get(&self, slot: u64) -> Result<&Capability, Error> {
        self.slots.get(slot as usize).and_then(|s| s.as_ref()).ok_or(Error::InvalidCapability)
    }

    /// Checks that `slot` is a valid, empty slot.
    pub fn check_empty(&self, slot: u64) -> Result<(), Error> {
        match self.slots.get(slot as usize) {
            None => Err(Error::InvalidCapability),
            Some(Some(_)) => Err(Error::SlotOccupied),
            Some(None) => Ok(()),
        }
    }

    pub fn put(&mut self, slot: u64, cap: Capability) {
        debug_assert!(self.slots[slot as usize].is_none());
        self.slots[slot as usize] = Some(cap);
    }

    pub fn take(&mut self, slot: u64) -> Result<Capability, Error> {
        self.slots.get_mut(slot as usize).and_then(|s| s.take()).ok_or(Error::InvalidCapability)
    }

    /// The slot holding capability `id`, if any.
    pub fn find(&self, id: CapId) -> Option<u64> {
        self.slots.iter().position(|s| s.as_ref().is_some_and(|c| c.id == id)).map(|i| i as u64)
    }

}

struct Node {
    owner: Pid,
    parent: Option<CapId>,
    children: Vec<CapId>,
    /// The pins lent through this capability (see `Syscall::RevocationWatch`).
    lent: Vec<PinRef>,
}

/// A pin: its pinner and the pin's number there.
pub type PinRef = (Pid, u64);

/// Where every capability lives and what it was derived from, and which pins each lends.
pub struct DerivationTree {
    nodes: BTreeMap<CapId, Node>,
    next_id: CapId,
    /// Pins whose lender went, not yet handed to their pinners (`Kernel::deliver_revocations`).
    revoked: Vec<PinRef>,
}

impl DerivationTree {
    pub const fn new() -> Self {
        DerivationTree { nodes: BTreeMap::new(), next_id: 1, revoked: Vec::new() }
    }

    /// Records that pin `pin` of `pinner`, taken through capability `id`, is lent through the
    /// nearest of `id`'s ancestors that another process holds (`id` itself is the pinner's),
    /// and returns that lender, if there is one.
    pub fn lend(&mut self, id: CapId, pinner: Pid, pin: u64) -> Option<CapId> {
        let mut at = self.nodes.get(&id)?.parent;
        while let Some(candidate) = at {
            let node = self.nodes.get_mut(&candidate)?;
            if node.owner != pinner {
                node.lent.push((pinner, pin));
                return Some(candidate);
            }
            at = node.parent;
        }
        None
    }

    /// Forgets that `pin` is lent through `lender` (the pin was released).
    pub fn unlend(&mut self, lender: CapId, pin: PinRef) {
        if let Some(node) = self.nodes.get_mut(&lender) {
            if let Some(at) = node.lent.iter().position(|&p| p == pin) {
                node.lent.swap_remove(at);
            }
        }
    }

    /// Revokes every pin lent through `id` (a `cap_revoke` of `id` takes back what it lent).
    pub fn revoke_lent(&mut self, id: CapId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            self.revoked.append(&mut node.lent);
        }
    }

    /// Takes the pins revoked since the last call.
    pub fn take_revoked(&mut self) -> Vec<PinRef> {
        core::mem::take(&mut self.revoked)
    }

    /// Whether pins were revoked since the last `take_revoked`.
    pub fn has_revoked(&self) -> bool {
        !self.revoked.is_empty()
    }

    /// Registers a new capability owned by `owner`, derived from `parent` (None for originals).
    pub fn insert(&mut self, owner: Pid, parent: Option<CapId>) -> CapId {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(p) = parent.and_then(|p| self.nodes.get_mut(&p)) {
            p.children.push(id);
        }
        self.nodes.insert(id, Node { owner, parent, children: Vec::new(), lent: Vec::new() });
        id
    }

    /// Records that capability `id` now lives in `owner` (IPC transfer keeps the id).
    pub fn set_owner(&mut self, id: CapId, owner: Pid) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.owner = owner;
        }
    }

    /// Forgets `id`; its children move to its parent, the pins lent through it are revoked.
    pub fn remove(&mut self, id: CapId) {
        let Some(node) = self.nodes.remove(&id) else { return };
        self.revoked.extend(node.lent.iter().copied());
        if let Some(parent) = node.parent.and_then(|p| self.nodes.get_mut(&p)) {
            parent.children.retain(|&c| c != id);
            parent.children.extend(node.children.iter().copied());
        }
        for child in &node.children {
            if let Some(c) = self.nodes.get_mut(child) {
                c.parent = node.parent;
            }
        }
    }

    /// Every descendant of `id` with its owner, deepest first.
    pub fn descendants(&self, id: CapId) -> Vec<(CapId, Pid)> {
        let mut out = Vec::new();
        let mut stack: Vec<CapId> = self.nodes.get(&id).map(|n| n.children.clone()).unwrap_or_default();
        while let Some(c) = stack.pop() {
            if let Some(node) = self.nodes.get(&c) {
                out.push((c, node.owner));
                stack.extend(node.children.iter().copied());
            }
        }
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}
