//! The initial user images, built by build.rs and embedded in the kernel image.

/// The program the kernel's user-mode tests run (user/usertest).
pub static USERTEST: &[u8] = include_bytes!(env!("USER_IMAGE_USERTEST"));

/// The user-level IOMMU server (iommu-server/).
pub static IOMMU_SERVER: &[u8] = include_bytes!(env!("USER_IMAGE_IOMMU_SERVER"));

/// The edu device driver, a client of the IOMMU server (drivers/edu).
pub static EDU_DRIVER: &[u8] = include_bytes!(env!("USER_IMAGE_EDU_DRIVER"));

/// The root task: starts the system from its static description (user/root).
pub static ROOT: &[u8] = include_bytes!(env!("USER_IMAGE_ROOT"));

/// Boot images a root task may start with `process_create`, by index
/// (`kernel_abi::boot_directory::image`).
pub static IMAGES: &[(&str, &[u8])] = &[("usertest", USERTEST), ("iommu-server", IOMMU_SERVER), ("edu-driver", EDU_DRIVER), ("root", ROOT)];
