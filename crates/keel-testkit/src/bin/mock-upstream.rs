//! `mock-upstream`: a standalone echoing OpenAI-compatible mock server for benchmarks and demos.
//!
//! Prints its base URL (`http://IP:PORT/v1`) as the only line on stdout, then serves until
//! SIGTERM or ctrl-c.

use std::process::ExitCode;
use std::time::Duration;

use keel_testkit::mock::{MockUpstream, Reply, Script};

const USAGE: &str = "usage: mock-upstream [--listen ADDR] [--delay-ms N] [--model NAME]...

  --listen ADDR   address to bind (default 127.0.0.1:0)
  --delay-ms N    wait N ms before each reply (default 0)
  --model NAME    a model name for GET /v1/models (repeatable; default mock-model)

Answers every chat completion with an echo of the last user message (JSON or SSE).";

struct Options {
    listen: String,
    delay_ms: u64,
    models: Vec<String>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        listen: "127.0.0.1:0".to_owned(),
        delay_ms: 0,
        models: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => options.listen = value()?,
            "--delay-ms" => {
                let text = value()?;
                options.delay_ms = text
                    .parse()
                    .map_err(|_| format!("--delay-ms: not a number of milliseconds: {text}"))?;
            }
            "--model" => options.models.push(value()?),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-upstream: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let reply = if options.delay_ms > 0 {
        Reply::delay(Duration::from_millis(options.delay_ms), Reply::Echo)
    } else {
        Reply::Echo
    };
    let mut script = Script::new().default_reply(reply).without_recording();
    if !options.models.is_empty() {
        script = script.models(options.models);
    }
    let handle = match MockUpstream::start_on(options.listen.as_str(), script).await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!(
                "mock-upstream: cannot listen on {}: {error}",
                options.listen
            );
            return ExitCode::FAILURE;
        }
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{}", handle.base_url())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    wait_for_signal().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
