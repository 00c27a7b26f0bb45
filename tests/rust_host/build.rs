// The extension installs its error-log callback at load time through the
// host's own `sqlite3_config` (see src/errlog.rs `find_config` in the
// extension). `sqlite3_config` is not in the extension API table, so the
// extension looks it up with dladdr/dlsym in the image that holds the host's
// SQLite. Our SQLite is bundled (statically linked into each executable), so
// its symbols must be in the executables' dynamic symbol table: -rdynamic
// (= -Wl,--export-dynamic) for the test binaries and the bench.
fn main() {
    println!("cargo:rustc-link-arg-tests=-rdynamic");
    println!("cargo:rustc-link-arg-bins=-rdynamic");
    println!("cargo:rerun-if-changed=build.rs");
}
