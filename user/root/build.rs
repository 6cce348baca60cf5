fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bins=-T{dir}/../user.ld");
    // Loaded at 224 MiB: apart from the programs it starts, below its own windows (main.rs).
    println!("cargo:rustc-link-arg-bins=--defsym=IMAGE_BASE=0xE000000");
    println!("cargo:rerun-if-changed={dir}/../user.ld");
}
