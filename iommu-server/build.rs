fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bins=-T{dir}/../user/user.ld");
    // Loaded at 128 MiB: below the server's fixed windows (the `iommu-server-contract` crate's `layout`).
    println!("cargo:rustc-link-arg-bins=--defsym=IMAGE_BASE=0x8000000");
    println!("cargo:rerun-if-changed={dir}/../user/user.ld");
}
