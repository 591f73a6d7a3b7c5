//! The command line the echo examples share.

/// `--addr HOST:PORT`, by default 127.0.0.1:8000; anything else prints the
/// usage and exits with status 2.
pub fn addr_arg(program: &str) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => "127.0.0.1:8000".into(),
        [flag, addr] if flag == "--addr" => addr.clone(),
        _ => {
            eprintln!("usage: {program} [--addr HOST:PORT]");
            std::process::exit(2);
        }
    }
}
