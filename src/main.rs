//! The `ckpt` binary: everything is in the library (`ckpt::cli`).

// candle allocates a fresh buffer per op; glibc's malloc returns large ones to the OS
// and page-faults them back on every step. mimalloc, told to, keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ckpt::alloc::configure();
    ckpt::cli::main()
}
