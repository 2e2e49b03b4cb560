//! Exports the path of `user.ld` to the servers' build scripts: a crate that
//! depends on `userland` reads it as `DEP_USERLAND_LINKER_SCRIPT`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=user.ld");
    println!("cargo:linker_script={dir}/user.ld");
}
