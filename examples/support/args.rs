//! The command line the echo examples share.

/// The value of each `(flag, default)` in `known`, in that order: every
/// argument must be one of them followed by its value, else the usage is
/// printed and the program exits with status 2.
pub fn flags(program: &str, known: &[(&str, &str)]) -> Vec<String> {
    let mut values: Vec<String> = known.iter().map(|(_, d)| d.to_string()).collect();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (known.iter().position(|(f, _)| *f == flag), args.next()) {
            (Some(i), Some(value)) => values[i] = value,
            _ => {
                let usage: Vec<String> = known.iter().map(|(f, d)| format!("[{f} {d}]")).collect();
                eprintln!("usage: {program} {}", usage.join(" "));
                std::process::exit(2);
            }
        }
    }
    values
}
