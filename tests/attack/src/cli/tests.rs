use super::*;

fn run(args: &[&str]) -> Result<Attack, ParseError> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    match parse(&args)? {
        Command::Run { name, attack } => {
            assert_eq!(name, args[0]);
            Ok(attack)
        }
        other => panic!("expected an attack, got {other:?}"),
    }
}

fn usage_error(args: &[&str]) -> String {
    match run(args) {
        Err(e @ ParseError::Usage { .. }) => e.to_string(),
        other => panic!("expected a usage error for {args:?}, got {other:?}"),
    }
}

#[test]
fn list_and_help() {
    assert_eq!(parse(&["list".to_owned()]), Ok(Command::List));
    assert_eq!(parse(&["help".to_owned()]), Ok(Command::Help));
    assert_eq!(parse(&[]), Err(ParseError::NoAttack));
}

#[test]
fn unknown_attack() {
    assert_eq!(
        run(&["escape-everything"]),
        Err(ParseError::Unknown("escape-everything".into()))
    );
}

#[test]
fn every_listed_attack_parses_with_sample_arguments() {
    let sample = |name: &str| -> Vec<&str> {
        match name {
            "read-file" | "write-rootfs" => vec!["/etc/x"],
            "spoof-source" => vec!["10.231.0.6", "10.231.0.1", "3128"],
            "connect" | "udp-send" | "udp-roundtrip" | "tcp-roundtrip" | "tcp-fastopen"
            | "mptcp-connect" => {
                vec!["10.231.0.1", "3128"]
            }
            "fork-bomb" | "memory-hog" | "ping-sleep" | "fd-limit" => vec!["3"],
            "signal-pid1" | "pidfd-signal-pid1" => vec!["9"],
            _ => vec![],
        }
    };
    let mut names: Vec<&str> = ATTACKS.iter().map(|(n, _)| *n).collect();
    for name in &names {
        let mut args = vec![*name];
        args.extend(sample(name));
        run(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ATTACKS.len(), "duplicate attack names");
}

#[test]
fn defaults() {
    assert_eq!(
        run(&["setns"]),
        Ok(Attack::Setns {
            path: "/proc/self/ns/net".into()
        })
    );
    assert_eq!(
        run(&["add-address"]),
        Ok(Attack::AddAddress {
            iface: "eth0".into(),
            prefix: Ipv4Prefix {
                addr: Ipv4Addr::new(203, 0, 113, 77),
                len: 32
            }
        })
    );
    assert_eq!(
        run(&["add-route", "veth9"]),
        Ok(Attack::AddRoute {
            iface: "veth9".into(),
            dst: Ipv4Prefix {
                addr: Ipv4Addr::new(1, 2, 3, 0),
                len: 24
            }
        })
    );
    assert_eq!(
        run(&["connect", "10.231.0.1", "3128"]),
        Ok(Attack::Connect {
            ip: "10.231.0.1".parse().unwrap(),
            port: 3128,
            timeout_ms: 2000
        })
    );
}

#[test]
fn roundtrips() {
    assert_eq!(
        run(&["udp-roundtrip", "10.231.0.1", "53"]),
        Ok(Attack::UdpRoundtrip {
            ip: "10.231.0.1".parse().unwrap(),
            port: 53,
            timeout_ms: 2000
        })
    );
    assert_eq!(
        run(&["tcp-roundtrip", "10.231.0.1", "443", "700"]),
        Ok(Attack::TcpRoundtrip {
            ip: "10.231.0.1".parse().unwrap(),
            port: 443,
            timeout_ms: 700
        })
    );
}

#[test]
fn explicit_arguments() {
    assert_eq!(
        run(&["connect", "::1", "443", "500"]),
        Ok(Attack::Connect {
            ip: "::1".parse().unwrap(),
            port: 443,
            timeout_ms: 500
        })
    );
    assert_eq!(
        run(&["spoof-source", "10.231.0.6", "10.231.0.1", "3128", "100"]),
        Ok(Attack::SpoofSource {
            src: "10.231.0.6".parse().unwrap(),
            dst: "10.231.0.1".parse().unwrap(),
            port: 3128,
            timeout_ms: 100
        })
    );
    assert_eq!(
        run(&["add-address", "eth0", "10.231.9.2/30"]),
        Ok(Attack::AddAddress {
            iface: "eth0".into(),
            prefix: Ipv4Prefix {
                addr: Ipv4Addr::new(10, 231, 9, 2),
                len: 30
            }
        })
    );
    assert_eq!(
        run(&["read-file", "/host/canary"]),
        Ok(Attack::ReadFile {
            path: "/host/canary".into()
        })
    );
    assert_eq!(run(&["fork-bomb", "64"]), Ok(Attack::ForkBomb { n: 64 }));
    assert_eq!(
        run(&["memory-hog", "512"]),
        Ok(Attack::MemoryHog { mib: 512 })
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    assert!(usage_error(&["read-file"]).contains("missing <path>"));
    assert!(usage_error(&["connect", "10.0.0.1"]).contains("missing <port>"));
    assert!(usage_error(&["connect", "10.0.0.1", "70000"]).contains("invalid <port>"));
    assert!(usage_error(&["connect", "example.com", "443"]).contains("invalid <ip>"));
    assert!(usage_error(&["fork-bomb", "-1"]).contains("invalid <n>"));
    assert!(usage_error(&["memory-hog", "lots"]).contains("invalid <mib>"));
    assert!(usage_error(&["hello", "extra"]).contains("unexpected arguments"));
    assert!(usage_error(&["add-address", "eth0", "10.0.0.1/33"]).contains("invalid"));
    assert!(usage_error(&["spoof-source", "10.0.0.1", "::1", "80"]).contains("address family"));
    let e = usage_error(&["udp-send"]);
    assert!(
        e.contains("usage: gigmcp-attack udp-send <ip> <port>"),
        "{e}"
    );
}

#[test]
fn prefixes() {
    let p: Ipv4Prefix = "10.1.2.3".parse().unwrap();
    assert_eq!(p.len, 32);
    assert_eq!(p.to_string(), "10.1.2.3/32");
    assert!("10.1.2.3/x".parse::<Ipv4Prefix>().is_err());
    assert!("::1/64".parse::<Ipv4Prefix>().is_err());
}
