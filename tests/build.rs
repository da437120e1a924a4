//! Records the locked versions of the main dependencies, for benchmark reports.

fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return;
    };
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if ["automerge", "quinn", "sled", "tokio", "rustls"].contains(&n) {
                let key = format!("LANYARD_DEP_{}", n.to_uppercase());
                println!("cargo:rustc-env={key}={}", v.trim_matches('"'));
            }
        }
    }
}
