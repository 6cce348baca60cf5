//! The initial user images, built by build.rs and embedded in the kernel image.

/// The program the kernel's user-mode tests run (user/usertest).
pub static USERTEST: &[u8] = include_bytes!(env!("USER_IMAGE_USERTEST"));

/// Boot images a root task may start with `process_create`, by index.
pub static IMAGES: &[(&str, &[u8])] = &[("usertest", USERTEST)];
