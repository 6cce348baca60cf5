extern crate std;

use super::SlotTable;
use std::collections::BTreeSet;
use std::vec::Vec;

/// A tiny key: 3 slots (index 0 is never used) of 4 generations each, so capacity and
/// retirement are reached in a few steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tiny(u64);

crate::slot_key!(Tiny, 2, 2);

#[test]
fn keys_start_small_and_are_never_zero() {
    let mut table: SlotTable<u32, &str> = SlotTable::new();
    assert_eq!(table.next_key(), Some(1));
    assert_eq!(table.insert("a"), Some(1));
    assert_eq!(table.insert("b"), Some(2));
    assert_eq!(table.get(0), None);
    assert_eq!(table[1], "a");
    assert_eq!(table.len(), 2);
}

#[test]
fn a_removed_key_stays_dead_when_its_slot_is_reused() {
    let mut table: SlotTable<u32, u8> = SlotTable::new();
    let first = table.insert(1).unwrap();
    assert_eq!(table.remove(first), Some(1));
    assert_eq!(table.remove(first), None, "double remove");
    let second = table.insert(2).unwrap();
    assert_ne!(second, first);
    assert_eq!(second & 0xffff, first & 0xffff, "the slot is reused");
    assert_eq!(table.get(first), None);
    assert_eq!(table.get_mut(first), None);
    assert_eq!(table.get(second), Some(&2));
    assert!(table.contains(second) && !table.contains(first));
}

#[test]
fn no_key_is_issued_twice_and_used_up_slots_retire() {
    let mut table: SlotTable<Tiny, usize> = SlotTable::new();
    let mut issued = BTreeSet::new();
    // Three usable slots of four generations: twelve keys in all, then the table is spent.
    for n in 0..12 {
        let key = table.insert(n).expect("a slot is left");
        assert!(issued.insert(key), "{key:?} issued twice");
        assert_ne!(key.0, 0);
        assert_eq!(table.remove(key), Some(n));
    }
    assert_eq!(table.next_key(), None);
    assert_eq!(table.insert(99), None);
    assert!(table.is_empty());
}

#[test]
fn a_full_table_refuses_and_recovers_when_a_record_goes() {
    let mut table: SlotTable<Tiny, u8> = SlotTable::new();
    let keys: Vec<Tiny> = (0..3).map(|n| table.insert(n).unwrap()).collect();
    assert_eq!(table.insert(3), None);
    assert_eq!(table.len(), 3);
    table.remove(keys[1]);
    let reused = table.insert(4).unwrap();
    assert_eq!(table.get(reused), Some(&4));
    assert_eq!(table.get(keys[1]), None);
}

#[test]
fn iteration_and_retain_see_exactly_the_live_records() {
    let mut table: SlotTable<u32, u32> = SlotTable::new();
    let keys: Vec<u32> = (0..6).map(|n| table.insert(n * 10).unwrap()).collect();
    table.remove(keys[2]);
    let seen: Vec<(u32, u32)> = table.iter().map(|(key, value)| (key, *value)).collect();
    assert_eq!(seen, [(keys[0], 0), (keys[1], 10), (keys[3], 30), (keys[4], 40), (keys[5], 50)]);
    table.retain(|_, value| *value % 20 == 0);
    assert_eq!(table.values().copied().collect::<Vec<_>>(), [0, 40]);
    assert_eq!(table.keys().collect::<Vec<_>>(), [keys[0], keys[4]]);
    for value in table.values_mut() {
        *value += 1;
    }
    assert_eq!(table[keys[4]], 41);
    assert_eq!(table.len(), 2);
}
