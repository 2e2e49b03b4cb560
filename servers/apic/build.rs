//! Links the server with userland's linker script, as a fixed-address (non-PIE) image.
fn main() {
    let script = std::env::var("DEP_USERLAND_LINKER_SCRIPT").expect("userland exports user.ld");
    println!("cargo:rerun-if-changed={script}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
