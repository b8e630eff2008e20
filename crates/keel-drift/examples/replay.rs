//! Stand-in for `keel drift replay`: `replay --detector SPEC [--format f64|csv] FILE`.
//!
//! Prints each detection index on its own stdout line and a summary on stderr.
//! `FILE` may be `-` for stdin.

use std::fs::File;
use std::io::{self, Read};
use std::process::ExitCode;

use keel_drift::{replay, Format};

const USAGE: &str = "usage: replay --detector SPEC [--format f64|csv] FILE";

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut spec, mut format, mut file) = (None, Format::F64Le, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--detector" | "-d" => spec = Some(args.next().ok_or("--detector needs a SPEC")?),
            "--format" | "-f" => {
                let f = args.next().ok_or("--format needs f64 or csv")?;
                format = f
                    .parse()
                    .map_err(|e: keel_drift::DriftError| e.to_string())?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if file.is_none() => file = Some(arg),
            _ => return Err(format!("unexpected argument `{arg}`\n{USAGE}")),
        }
    }
    let spec = spec.ok_or(USAGE)?;
    let file = file.ok_or(USAGE)?;
    let input: Box<dyn Read> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&file).map_err(|e| format!("cannot open {file}: {e}"))?)
    };
    let summary = replay(&spec, format, input, io::stdout().lock()).map_err(|e| e.to_string())?;
    eprintln!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
