use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> std::process::ExitCode {
    let matches = sip_ka::cli::Cli::command().get_matches();
    let cli = sip_ka::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match sip_ka::cli::dispatch(cli, &matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-ka: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
