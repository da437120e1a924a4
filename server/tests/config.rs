//! The serve configuration: the example file parses (and is the one the
//! README shows), layers merge key by key (flag > environment > file >
//! default), and every bad key or value is an error naming it, before
//! anything starts.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use lanyard_server::config::{ConfigError, LogFormat, ServeConfig, ServeSettings};
use lanyard_server::StoreLocation;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard-server");

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lanyard.toml");
    std::fs::read_to_string(path).unwrap()
}

fn resolve(
    file: Option<&str>,
    env: &[(&str, &str)],
    flags: ServeSettings,
) -> Result<ServeConfig, ConfigError> {
    ServeConfig::resolve(
        file.map(|t| (Path::new("lanyard.toml"), t)),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        flags,
    )
}

#[test]
fn the_example_file_parses_and_is_the_one_in_the_readme() {
    let text = example();
    let cfg = resolve(Some(&text), &[], ServeSettings::default()).unwrap();
    assert_eq!(cfg.data, Path::new("/var/lib/lanyard"));
    assert_eq!(cfg.listen, "0.0.0.0:4433".parse().unwrap());
    assert_eq!(cfg.log_format, LogFormat::Json);
    assert_eq!(cfg.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        readme.contains(&format!("```toml\n{text}```")),
        "the README shows deploy/lanyard.toml whole, in a ```toml block"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let file = "max-connections = 100\nmax-handshaking = 7\nretry-after = \"9s\"\n[admin]\nlisten = \"127.0.0.1:1\"\n";
    let env = [
        ("LANYARD_MAX_CONNECTIONS", "200"),
        ("LANYARD_MAX_HANDSHAKING", "8"),
        ("LANYARD_ADMIN__LISTEN", "127.0.0.1:2"),
        // Not configuration keys: other tools' variables are left alone.
        ("LANYARD_HOME", "/somewhere"),
        ("HOME", "/root"),
    ];
    let flags = ServeSettings {
        max_connections: Some(300),
        ..ServeSettings::default()
    };
    let cfg = resolve(Some(file), &env, flags).unwrap();
    assert_eq!(cfg.max_connections, 300, "flag");
    assert_eq!(cfg.max_handshaking, 8, "environment over file");
    assert_eq!(cfg.admin.listen, Some("127.0.0.1:2".parse().unwrap()));
    assert_eq!(cfg.retry_after.0, std::time::Duration::from_secs(9), "file");
    let default = ServeConfig::resolve(None, Vec::new(), ServeSettings::default()).unwrap();
    assert_eq!(
        cfg.handshakes_per_sec, default.handshakes_per_sec,
        "default"
    );
    assert_eq!(
        default.admin.listen, None,
        "the admin listener is off by default"
    );

    // What `config` prints reads back as the same configuration.
    let printed = cfg.to_toml();
    let again = resolve(Some(&printed), &[], ServeSettings::default()).unwrap();
    assert_eq!(again, cfg, "{printed}");
}

#[test]
fn an_unknown_key_or_a_bad_value_names_it_and_its_line() {
    let e = resolve(
        Some("listen = \"0.0.0.0:1\"\n\nmax-conections = 3\n"),
        &[],
        ServeSettings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("lanyard.toml") && e.contains("line 3") && e.contains("max-conections"),
        "{e}"
    );

    let e = resolve(Some("[admin]\nlisten = 7\n"), &[], ServeSettings::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("socket address"), "{e}");

    let e = resolve(Some("[admin]\nport = 7\n"), &[], ServeSettings::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("port"), "{e}");

    let e = resolve(
        Some("retry-after = \"soon\"\n"),
        &[],
        ServeSettings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 1") && e.contains("soon"), "{e}");

    let e = resolve(
        None,
        &[("LANYARD_MAX_CONNECTIONS", "lots")],
        ServeSettings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("LANYARD_MAX_CONNECTIONS") && e.contains("lots"),
        "{e}"
    );

    for zero in ["0", "0.0"] {
        let e = resolve(
            Some(&format!("handshakes-per-sec = {zero}\n")),
            &[],
            ServeSettings::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    key: "handshakes-per-sec",
                    ..
                }
            ),
            "{e}"
        );
    }
    // A whole number is a number of handshakes a second, from the file or
    // the environment.
    let cfg = resolve(
        None,
        &[("LANYARD_HANDSHAKES_PER_SEC", "100")],
        ServeSettings::default(),
    )
    .unwrap();
    assert_eq!(cfg.handshakes_per_sec, 100.0);
}

#[test]
fn the_store_is_sled_or_a_postgres_url_whose_password_is_never_printed() {
    let cfg = resolve(None, &[], ServeSettings::default()).unwrap();
    assert_eq!(cfg.store, StoreLocation::Sled);
    let url = "postgres://lanyard:s3cret@db.example:5432/lanyard";
    let cfg = resolve(
        Some("store = \"sled\"\n"),
        &[("LANYARD_STORE", url)],
        ServeSettings::default(),
    )
    .unwrap();
    assert_eq!(cfg.store, StoreLocation::Postgres(url.into()));
    let printed = cfg.to_toml();
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(
        printed.contains("store = \"postgres://lanyard@db.example:5432/lanyard\""),
        "{printed}"
    );
    let e = resolve(
        Some("store = \"mysql://x:pw@h/db\"\n"),
        &[],
        ServeSettings::default(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("store") && text.contains("PostgreSQL URL"),
        "{text}"
    );
    assert!(!text.contains("pw"), "no password in errors: {text}");
}

#[test]
fn the_binary_prints_the_effective_configuration_and_refuses_a_bad_file_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.toml");
    std::fs::write(&file, "max-connections = 100\nlog-format = \"json\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "--config"])
        .arg(&file)
        .args(["--max-handshaking", "9"])
        .env("LANYARD_MAX_CONNECTIONS", "150")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let printed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(printed["max-connections"].as_integer(), Some(150), "{text}");
    assert_eq!(printed["max-handshaking"].as_integer(), Some(9), "{text}");
    assert_eq!(printed["log-format"].as_str(), Some("json"), "{text}");

    let data = dir.path().join("data");
    std::fs::write(&file, "listen = \"0.0.0.0:4433\"\nmax-conections = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 2") && err.contains("max-conections"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "nothing started: no data directory was made"
    );
}
