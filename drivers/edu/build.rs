fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bins=-T{dir}/../../user/user.ld");
    // Loaded at 192 MiB: below the driver's fixed windows.
    println!("cargo:rustc-link-arg-bins=--defsym=IMAGE_BASE=0xC000000");
    println!("cargo:rerun-if-changed={dir}/../../user/user.ld");
}
