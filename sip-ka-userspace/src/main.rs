use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = sip_ka::cli::Cli::parse();
    match sip_ka::cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-ka: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
