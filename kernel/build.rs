//! Selects the linker script of the target architecture and builds the user programs that are
//! embedded in the kernel image as its initial user images.
//!
//! User programs are built by a nested cargo into their own target directory (a second cargo
//! on the outer build's directory would wait on its lock forever) with the small code model:
//! the target JSON's kernel code model only suits code linked in the top 2 GiB.
use std::path::PathBuf;
use std::process::Command;

const USER_PROGRAMS: &[&str] = &["usertest", "iommu-server", "edu-driver", "root"];

fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = dir.parent().unwrap().to_path_buf();
    let script = dir.join(format!("linker-{arch}.ld"));
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
    for watched in ["user", "crates", "iommu-server", "drivers"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let target_json = root.join(format!("{arch}-target.json"));
    let user_target_dir = root.join("target").join("user");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "--target"])
        .arg(&target_json)
        .arg("--target-dir")
        .arg(&user_target_dir);
    for program in USER_PROGRAMS {
        cargo.args(["-p", program]);
    }
    // The outer build's flags and profile settings must not leak into the nested build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG", "RUSTC_WORKSPACE_WRAPPER"] {
        cargo.env_remove(var);
    }
    cargo.env("RUSTC_BOOTSTRAP", "1").env("CARGO_ENCODED_RUSTFLAGS", "-Ccode-model=small");
    let status = cargo.status().expect("cannot run cargo for the user programs");
    assert!(status.success(), "building the user programs failed");
    let out = user_target_dir.join(format!("{arch}-target")).join("release");
    for program in USER_PROGRAMS {
        println!("cargo:rustc-env=USER_IMAGE_{}={}", program.to_uppercase().replace('-', "_"), out.join(program).display());
    }
}
