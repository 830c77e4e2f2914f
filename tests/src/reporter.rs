//! The reporter binary, built inside the test package so that tests can spawn and SIGKILL it
//! (`CARGO_BIN_EXE_e2e-reporter`). Same code path as `omnifold-reporter`.

fn main() -> anyhow::Result<()> {
    omnifold_reporter::cli::main()
}
