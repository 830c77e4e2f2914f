//! The coordinator binary, built inside the test package so that tests can spawn and
//! SIGKILL it (`CARGO_BIN_EXE_e2e-coordinator`). Same code path as `omnifold-coordinator`.

fn main() -> anyhow::Result<()> {
    omnifold_coordinator::cli::main()
}
