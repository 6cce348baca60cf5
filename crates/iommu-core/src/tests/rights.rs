//! The rights the protocol declares for each handle argument (`Opcode::arguments`, also the
//! Rights column of docs/ipc-api.md) are the rights the object model enforces: every request
//! of the protocol, with one handle argument swapped for a handle derived with fewer rights.

use iommu_abi::wire::Request;
use iommu_abi::{Error, Handle, Rights};

use super::inject::{requests, status, world, Kernel};
use super::*;

/// The reply status of request `index` of `requests()`, in a fresh world, after replacing the
/// handle in word `word` with one derived from it with `rights`.
fn with_rights(index: usize, word: usize, rights: Rights) -> Option<Error> {
    let mut w = world();
    let (_, request, cap): (_, Request, _) = requests(&w)[index];
    let mut msg = request.encode();
    // Derived from a handle to the same object with GRANT (the request may name a restricted one).
    let named = u32::try_from(msg[word]).expect("a handle word");
    let table = w.h.server.handle_table(A);
    let object = table.iter().find(|(handle, ..)| *handle == named).expect("a handle of A").1;
    let (granting, ..) = table.iter().find(|(_, id, held)| *id == object && held.contains(Rights::GRANT)).expect("A owns every object of the world");
    let derived = w.h.server.handle_derive(A, Handle(*granting), rights, A).expect("derivable");
    msg[word] = u64::from(derived.0);
    status(&dispatch(&mut w.h.server, &mut Kernel, A, &msg, cap))
}

#[test]
fn declared_rights_are_needed_and_enough() {
    let count = requests(&world()).len();
    let mut checked = Vec::new();
    for index in 0..count {
        let (name, request, _) = requests(&world())[index];
        for argument in request.opcode().arguments().as_slice() {
            let Some(needed) = argument.rights else { continue };
            let word = argument.claim.words.trailing_zeros() as usize;
            let context = format!("{name}: `{}` with", argument.name);
            if !needed.is_empty() {
                let without = Rights::all().difference(needed);
                assert_eq!(with_rights(index, word, without), Some(Error::MissingRight), "{context} all rights but {needed:?}");
            }
            assert_ne!(with_rights(index, word, needed), Some(Error::MissingRight), "{context} only {needed:?}");
            checked.push((request.opcode(), argument.name));
        }
    }
    for opcode in iommu_abi::Opcode::ALL {
        for argument in opcode.arguments().as_slice().iter().filter(|argument| argument.rights.is_some()) {
            assert!(checked.contains(&(opcode, argument.name)), "{opcode:?} `{}` not checked", argument.name);
        }
    }
}
