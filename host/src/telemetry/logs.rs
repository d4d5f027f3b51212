//! The log format of every command: `--log-format text|json` (tracing-subscriber), without ANSI
//! colour when stderr is not a terminal, the level from `LEVEE_LOG` (an `EnvFilter`).

use clap::ValueEnum;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing spans (message id, function,
    /// version for an invocation): for CloudWatch, Loki, jq.
    Json,
}

/// Installs the subscriber. `server`: the default level is `info` (else `warn`).
pub fn init(format: LogFormat, server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEVEE_LOG")
        // aws_config warns about every region and credential source it tries (IMDS is refused off
        // EC2); what matters reaches the user as the error of the command.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},aws_config=error"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_ansi(false)
            .init(),
    }
}
