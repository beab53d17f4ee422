//! Links `vessel-monitor` (src/bin/vessel-monitor.rs) as a position-dependent
//! executable (`-no-pie`); `vessel` itself is linked as cargo does by default.
//!
//! One monitor stays beside every running container, so what each one holds
//! privately is paid once per container. In a position-independent executable the
//! dynamic loader writes every pointer of `.data.rel.ro` and the GOT at start-up
//! (relative relocations), which turns those file pages into private copies in each
//! process: with `-no-pie` the linker resolves them at link time, and the pages stay
//! clean page-cache pages shared by all monitors. The code itself may be compiled
//! position-independent (the default): such code links into a fixed-address
//! executable unchanged. The monitor stays dynamically linked against glibc: a
//! static glibc would put libc's data and relocations into every monitor again.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Of `-pie` and `-no-pie`, the last on the linker's command line wins; rustc puts
    // its own `-pie` before the arguments of build scripts.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=vessel-monitor=-no-pie");
    }
}
